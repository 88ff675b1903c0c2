"""Expected changes are findings (#21): a level change a state change explains is said in
the summary ("the light came on at 08:12 when the office became occupied"), with only its
own numbers, and grounding holds a model's text to them."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC

import pytest

from edge_agent.anomalies import AnomalyDetector
from edge_agent.bench.alerts import events, read_rows
from edge_agent.domain import AskRequest, ExplainedChange, MetricFacts
from edge_agent.facts import WindowStore
from edge_agent.findings import Finding, FindingRules, Findings, find
from edge_agent.grounding import check
from edge_agent.narrator import Narrator, NarratorConfig
from edge_agent.prompts import MAX_NOTES, fallback_text
from edge_agent.semantics import Naming
from edge_agent.service import Agent, AgentConfig, Route
from edge_agent.settings import Settings
from edge_agent.transport.base import Message
from edge_agent.worker import InferenceWorker
from tests.support.data import uci_occupancy
from tests.test_service import TOPICS, MemoryTransport, ScriptedGenerator

H = 3600.0
ARRIVED = 8 * H + 12 * 60


def _facts(light_last: float = 450.0) -> tuple[MetricFacts, ...]:
    occupied = MetricFacts("office/sensor", "occupancy", 9, 1.0, 0.0, 1.0, 0.5, 0.0, 9 * H, None,
                           "office", changes=((ARRIVED, 1.0),))  # fmt: skip
    light = MetricFacts("office/sensor", "illuminance", 60, light_last, 0.0, 460.0, 300.0, 0.0,
                        9 * H, "lx", "office", 40.0)  # fmt: skip
    return occupied, light


def _change(
    ts: float = ARRIVED + 30, previous: float | None = 0.0, value: float = 450.0
) -> ExplainedChange:
    cause = ("office/sensor", "occupancy", 1.0, ARRIVED)
    return ExplainedChange("office/sensor", "illuminance", value, previous, ts, "jump", *cause,
                           "lx", "office", 0.0)  # fmt: skip


def _find(*changes: ExplainedChange, language: str = "en", **kw: object) -> Findings:
    rules = FindingRules(language=language, tz=UTC)
    facts = kw.pop("facts", _facts())
    return find(facts, rules=rules, names=Naming(), window_s=9 * H, explained=changes)  # type: ignore[arg-type]


def _explained(found: Findings) -> Finding:
    (only,) = [f for f in found.items if f.kind == "explained"]
    return only


def test_a_light_jump_explained_by_an_arrival_is_a_finding_in_english() -> None:
    found = _find(_change())
    light = _explained(found)
    assert light.sentence == (
        "The light came on at 08:12, from 0 lx to 450 lx, when Office became occupied."
    )
    assert [(n.text, n.role) for n in light.numbers] == [
        ("08:12", "time"), ("0 lx", "from"), ("450 lx", "to"),
    ]  # fmt: skip
    # Ranked right after the arrival itself, and the light is said once.
    assert [f.kind for f in found.items] == ["change", "explained"]
    assert found.severity == "info"
    assert found.notable


def test_the_same_change_in_french() -> None:
    light = _explained(_find(_change(), language="fr"))
    assert light.sentence == (
        "La luminosité a augmenté de 0 lx à 450 lx à 08:12, "
        "quand l'état de Office est passé à occupé."
    )


def test_a_change_without_a_known_previous_level_cites_only_its_level_and_time() -> None:
    light = _explained(_find(_change(previous=None)))
    assert light.sentence == "Light reached 450 lx at 08:12 when Office became occupied."
    assert [n.role for n in light.numbers] == ["time", "to"]


def test_a_change_before_the_summary_window_is_still_said() -> None:
    # It is decided only once its explain window has passed, often after the summary window.
    occupied = _facts()[0]
    steady = MetricFacts("office/sensor", "illuminance", 60, 450.0, 448.0, 452.0, 450.0, 0.0,
                         9 * H, "lx", "office", 0.0)  # fmt: skip
    light = _explained(_find(_change(ts=-600.0), facts=(occupied, steady)))
    assert "at 23:50" in light.sentence


def test_without_explained_changes_the_light_is_a_plain_finding() -> None:
    found = _find()
    assert not [f for f in found.items if f.kind == "explained"]
    assert any(f.metric == "illuminance" for f in found.items)


def test_the_latest_change_of_a_series_wins() -> None:
    off = _change(ts=ARRIVED + 3600, previous=450.0, value=3.0)
    light = _explained(_find(_change(), off))
    assert "went off at 09:12" in light.sentence


def test_a_series_without_readings_in_the_window_still_gets_its_finding() -> None:
    found = _find(_change(), facts=_facts()[:1])
    assert _explained(found).numbers[-1].text == "450 lx"


def test_the_summary_fallback_mentions_it() -> None:
    found = _find(_change())
    text = fallback_text(found.items, "en")
    assert "The light came on at 08:12, from 0 lx to 450 lx, when Office became occupied." in text
    assert "La luminosité a augmenté de 0 lx à 450 lx à 08:12" in fallback_text(
        _find(_change(), language="fr").items, "fr"
    )


def test_grounding_accepts_its_numbers_in_their_roles() -> None:
    for language in ("en", "fr"):
        shown = _find(_change(), language=language).items
        light = _explained(_find(_change(), language=language))
        for text in (light.sentence, light.phrase):
            assert check(text, shown, language=language).ok, text
    shown = _find(_change()).items
    assert check("The light went from 0 lx to 450 lx when Office became occupied.", shown).ok


def test_grounding_rejects_wrong_numbers_times_and_roles() -> None:
    shown = _find(_change(), facts=_facts()).items
    bad = {
        "The light came on at 08:12, from 0 lx to 500 lx.": "500",
        "The light came on at 08:15 when Office became occupied.": "08:15",
        "The light came on at 08:12, from 0 % to 450 %.": "no finding has 0 %",
        # 450 lx was the level after the change, not necessarily the level now.
        "The light is 450 lx.": "not the current value",
    }
    for text, reason in bad.items():
        result = check(text, shown)
        assert not result.ok, text
        assert reason in result.reason, (text, result.reason)
    fr = _find(_change(), language="fr").items
    assert not check("La luminosité est à 450 lx.", fr, language="fr").ok


def _office_agent(
    gen: ScriptedGenerator, transport: MemoryTransport
) -> tuple[Agent, InferenceWorker]:
    worker = InferenceWorker(gen, max_backlog=4)
    narrator = Narrator(worker, NarratorConfig(32, 32, 10.0, tz=UTC))
    route = Route.build("zigbee2mqtt/#", "zigbee2mqtt", "office")
    config = AgentConfig(TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536)
    change = ExplainedChange("office", "illuminance", 450.0, 0.0, 900.0, "jump", "office",
                             "occupancy", 1.0, 890.0, "lx", "office", 0.0)  # fmt: skip
    store = WindowStore(600)
    agent = Agent(
        transport, narrator, (route,), config, store, AnomalyDetector(), lambda: 1000.0,
        explained=lambda area: [change] if area == "office" else [],
    )  # fmt: skip
    agent.handle(Message("zigbee2mqtt/office", b'{"illuminance": 450, "occupancy": true}'))
    return agent, worker


def test_the_agent_says_an_explained_change_in_its_summary() -> None:
    transport = MemoryTransport()
    text = "The light came on at 00:15, from 0 lx to 450 lx, when Office became occupied."
    gen = ScriptedGenerator(text, "The light came on at 00:15, from 0 lx to 900 lx.")
    agent, worker = _office_agent(gen, transport)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(agent.digest(1000.0), 5)
        await asyncio.wait_for(agent.digest(1000.0), 5)
        task.cancel()

    asyncio.run(scenario())
    first, second = transport.on("t/summary/office")
    assert first["text"] == text
    assert first["severity"] == "info"
    # An invented level is not published: the fallback says the change instead.
    assert "900" not in second["text"]
    assert "The light came on at 00:15, from 0 lx to 450 lx" in second["text"]


def test_a_switch_that_turned_on_explains_a_power_jump() -> None:
    power = MetricFacts("kitchen/kettle", "power", 30, 2000.0, 0.0, 2000.0, 900.0, 0.0, 9 * H,
                        "W", "kitchen", 100.0)  # fmt: skip
    cause = ("kitchen/kettle", "switch", 1.0, 7 * H - 5)
    change = ExplainedChange("kitchen/kettle", "power", 2000.0, 0.0, 7 * H, "jump", *cause, "W",
                             "kitchen", 0.0)  # fmt: skip
    found = find((power,), rules=FindingRules(tz=UTC), names=Naming(), window_s=9 * H,
                 explained=(change,))  # fmt: skip
    kettle = _explained(found)
    assert kettle.sentence.endswith("at 07:00 when Kettle turned on.")
    assert check(kettle.sentence, found.items).ok
    assert not check("Kettle turned off at 07:00.", found.items).ok


def test_the_title_says_it_briefly() -> None:
    assert _explained(_find(_change())).headline == "light on at 08:12"
    assert _explained(_find(_change(), language="fr")).headline == "luminosité en hausse à 08:12"


def test_is_the_office_occupied_is_still_answered_by_the_occupancy() -> None:
    from edge_agent.prompts import relevant

    steady = MetricFacts("office/sensor", "occupancy", 9, 1.0, 1.0, 1.0, 1.0, 0.0, 9 * H, None,
                         "office")  # fmt: skip
    found = _find(_change(), facts=(steady, _facts()[1]))
    (about,) = relevant("Is the office occupied?", found.items, 1)
    assert about.metric == "occupancy"
    assert check("Yes, Office is occupied.", found.items, question="Is the office occupied?").ok


def test_a_lamp_step_that_explains_itself_names_no_cause() -> None:
    cause = ("office/sensor", "illuminance", 450.0, ARRIVED)
    own = ExplainedChange("office/sensor", "illuminance", 450.0, 0.0, ARRIVED, "jump", *cause,
                          "lx", "office", 0.0)  # fmt: skip
    for language, sentence in (
        ("en", "The light came on at 08:12, from 0 lx to 450 lx."),
        ("fr", "La luminosité a augmenté de 0 lx à 450 lx à 08:12."),
    ):
        found = _find(own, language=language)
        light = _explained(found)
        assert light.sentence == sentence
        assert light.vocabulary is None
        assert check(sentence, found.items, language=language).ok


def test_the_state_the_cause_reached_then_is_accepted_whatever_it_is_now() -> None:
    # UCI office data: the light stepped up just as the office was left; it is occupied now.
    steady = MetricFacts("office/sensor", "occupancy", 9, 1.0, 1.0, 1.0, 1.0, 0.0, 9 * H, None,
                         "office")  # fmt: skip
    cause = ("office/sensor", "occupancy", 0.0, ARRIVED)
    left = ExplainedChange("office/sensor", "illuminance", 426.0, 356.0, ARRIVED, "zscore", *cause,
                           "lx", "office", 1.0)  # fmt: skip
    found = _find(left, facts=(steady, _facts()[1]))
    light = _explained(found)
    assert light.sentence == "Light rose from 356 lx to 426 lx at 08:12 when Office became empty."
    assert check(light.sentence, found.items).ok
    assert not check("Office is empty.", found.items).ok  # not now


def test_a_change_too_small_to_show_leaves_the_plain_finding() -> None:
    tiny = _change(previous=450.2, value=450.4)
    found = _find(tiny)
    assert not [f for f in found.items if f.kind == "explained"]
    assert any(f.metric == "illuminance" for f in found.items)


def test_an_answer_can_say_when_the_light_came_on() -> None:
    transport = MemoryTransport()
    text = "The light came on at 00:15, when Office became occupied."
    agent, worker = _office_agent(ScriptedGenerator(text), transport)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        request = AskRequest.from_payload(
            b'{"id": 1, "q": "When did the light come on?"}',
            default_reply_to="t/answer",
            now=1000.0,
        )
        assert await asyncio.wait_for(agent.answer(request), 5) is not None
        task.cancel()

    asyncio.run(scenario())
    (reply,) = transport.on("t/answer")
    assert reply["answer"] == text
    assert reply["fallback"] is False


def test_a_jump_after_an_older_explained_change_is_still_news() -> None:
    # The light's window starts after the change: its jump is something else.
    occupied = _facts()[0]
    later = MetricFacts("office/sensor", "illuminance", 60, 450.0, 0.0, 460.0, 300.0, 2 * H,
                        9 * H, "lx", "office", 40.0)  # fmt: skip
    found = _find(_change(ts=H), facts=(occupied, later))
    assert [f.kind for f in found.items if f.metric == "illuminance"] == ["jump"]


UCI = uci_occupancy()


@pytest.mark.skipif(not (UCI / "datatraining.txt").is_file(), reason=f"no UCI data at {UCI}")
def test_on_real_office_data_every_explained_finding_is_grounded() -> None:
    """Six days of a real office (UCI occupancy): the summaries the agent would build every
    window say the explained changes, and their own words pass the grounding check."""
    settings = Settings(anomalies={"thresholds": {"co2": {"max": 1000}}})
    detector = AnomalyDetector(**settings.anomalies.model_dump())
    window = settings.summary.window_s
    store = WindowStore(window, **settings.facts.model_dump())
    readings = events(read_rows(UCI))
    said: Counter[str] = Counter()
    next_summary, next_tick = readings[0].ts + window, readings[0].ts + 60
    for event in readings:
        store.add(event)
        detector.check(event, store)
        if event.ts >= next_tick:
            next_tick = event.ts + 60
            detector.check_stale(store, event.ts)
        if event.ts < next_summary:
            continue
        next_summary = event.ts + window
        facts = store.facts(event.ts)
        for language in ("en", "fr"):
            rules = FindingRules(limits={"co2": (None, 1000.0)}, language=language, tz=UTC)
            found = find(facts, rules=rules, names=Naming(), window_s=window,
                         explained=detector.explained_in("office"))  # fmt: skip
            shown = found.items[:MAX_NOTES]
            for f in (f for f in found.items if f.kind == "explained"):
                said[language] += 1
                said["shown"] += f in shown
                for text in (f.sentence, f.phrase):
                    assert check(text, found.items, language=language).ok, text
            fallback = fallback_text(shown, language)
            assert check(fallback, shown, language=language).ok, fallback
    assert said["en"] == said["fr"] >= 50
    assert said["shown"] == 2 * said["en"]  # ranked among the notes the model is shown
