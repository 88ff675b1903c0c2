"""The agent's logic with a scripted generator and an in-memory transport.

The model is faked only here, to make it say exactly what a test needs: an invented
number must turn a summary into the deterministic fallback.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from edge_agent.anomalies import AnomalyDetector
from edge_agent.domain import AskRequest, Excursion, Topics
from edge_agent.facts import WindowStore
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.narrator import Narrator, NarratorConfig
from edge_agent.service import Agent, AgentConfig, Route
from edge_agent.transport.base import Message
from edge_agent.worker import InferenceWorker


class ScriptedGenerator:
    """Answers every prompt with the next scripted text."""

    model_id = "scripted"
    prompt_format: Literal["chat", "completion"] = "chat"
    context_length = 2048

    def __init__(self, *texts: str, stop_reason: str = "eos") -> None:
        self.texts = list(texts)
        self.stop_reason = stop_reason
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render(self, user: str) -> str:
        return f"<user>{user}</user>"

    def generate(self, request: GenerationRequest) -> Generation:
        self.prompts.append(request.prompt)
        text = self.texts.pop(0)
        if request.on_text is not None:
            request.on_text(text)
        return Generation(text, 10, 5, self.stop_reason, 0.5)


class MemoryTransport:
    """Records publishes; no broker."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, Any]]] = []

    async def connect(self) -> None:
        return None

    async def messages(self) -> AsyncIterator[Message]:
        if False:
            yield Message("", b"")

    def publish(self, topic: str, payload: bytes | str, **kw: Any) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.published.append((topic, data, kw))

    async def close(self) -> None:
        return None

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.published if t == topic]


TOPICS = Topics("t/summary", "t/deadletter", "t/anomaly", "t/ask", "t/answer")


def _agent(
    gen: ScriptedGenerator,
    transport: MemoryTransport,
    store: WindowStore | None = None,
    *,
    area: str | None = "kitchen",
    excursions: Callable[[str | None], Sequence[Excursion]] | None = None,
) -> tuple[Agent, InferenceWorker]:
    worker = InferenceWorker(gen, max_backlog=4)
    limits = {"co2": (None, 1200.0)}
    narrator = Narrator(worker, NarratorConfig(32, 32, 10.0, limits=limits, tz=UTC))
    route = Route.build("zigbee2mqtt/#", "zigbee2mqtt", area)
    config = AgentConfig(TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536)
    agent = Agent(
        transport,
        narrator,
        (route,),
        config,
        store or WindowStore(600),
        AnomalyDetector(),
        lambda: 1000.0,
        excursions=excursions,
    )
    return agent, worker


def _summarise(
    agent: Agent, worker: InferenceWorker, readings: list[dict[str, float]], store: WindowStore
) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        for reading in readings:
            agent.handle(Message("zigbee2mqtt/fridge", json.dumps(reading).encode()))
        await asyncio.wait_for(agent.summarise("kitchen", store.facts(1000.0), end=1000.0), 5)
        task.cancel()

    asyncio.run(scenario())


def test_grounded_text_is_published_as_written() -> None:
    gen, transport = ScriptedGenerator("The fridge is at 4.5 °C."), MemoryTransport()
    store = WindowStore(600)
    agent, worker = _agent(gen, transport, store)
    _summarise(agent, worker, [{"temperature": 4.5}], store)
    (summary,) = transport.on("t/summary/kitchen")
    assert summary["text"] == "The fridge is at 4.5 °C."
    assert summary["fallback"] is False
    assert summary["title"] == "Kitchen: 4.5 °C"
    assert transport.on("t/summary") == []  # the whole-home summary comes from the digest
    assert agent.narrator_stats[:2] == (1, 0)


def test_an_invented_number_gives_a_fallback_with_the_reason() -> None:
    gen, transport = ScriptedGenerator("The fridge is at 9.1 °C."), MemoryTransport()
    store = WindowStore(600)
    agent, worker = _agent(gen, transport, store)
    _summarise(agent, worker, [{"temperature": 4.5}, {"temperature": 5.0}], store)
    (summary,) = transport.on("t/summary/kitchen")
    assert summary["fallback"] is True
    assert summary["fallback_reason"] == "grounding: number 9.1 is not in the findings"
    assert summary["text"] == "All quiet. Temperature is 5.0 °C."
    assert agent.narrator_stats[:2] == (0, 1)


def test_the_journal_keeps_the_rejected_text_beside_the_reason() -> None:
    gen, transport = ScriptedGenerator("The fridge is at 9.1 °C."), MemoryTransport()
    store = WindowStore(600)
    agent, worker = _agent(gen, transport, store)
    with capture_logs() as logs:
        _summarise(agent, worker, [{"temperature": 4.5}], store)
    (line,) = [e for e in logs if e["event"] == "narration_fallback"]
    assert line["rejected"] == "The fridge is at 9.1 °C."
    assert line["reason"] == "grounding: number 9.1 is not in the findings"


def test_an_invented_sensor_gives_a_fallback() -> None:
    gen, transport = ScriptedGenerator("The freezer is fine."), MemoryTransport()
    store = WindowStore(600)
    agent, worker = _agent(gen, transport, store)
    agent.handle(Message("zigbee2mqtt/freezer", b'{"temperature": -18}'))
    agent.handle(Message("zigbee2mqtt/fridge", b'{"temperature": 4.5}'))
    # The freezer is a known device, but not among the facts being summarised.
    fridge = tuple(f for f in store.facts(1000.0) if f.device == "fridge")

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(agent.summarise("kitchen", fridge, end=1000.0), 5)
        task.cancel()

    asyncio.run(scenario())
    (summary,) = transport.on("t/summary/kitchen")
    assert summary["fallback_reason"].lower() == "grounding: 'freezer' is not in the findings"


def test_a_deadline_cut_gives_a_fallback() -> None:
    gen = ScriptedGenerator("The fridge is", stop_reason="deadline")
    transport = MemoryTransport()
    store = WindowStore(600)
    agent, worker = _agent(gen, transport, store)
    _summarise(agent, worker, [{"temperature": 4.5}], store)
    (summary,) = transport.on("t/summary/kitchen")
    assert (summary["fallback"], summary["fallback_reason"]) == (True, "deadline")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"\xff\xfe", "invalid_utf8"), (b"[1, 2]", "unknown_shape"), (b'{"t": NaN}', "not_finite")],
)
def test_bad_payloads_are_dead_lettered_and_the_agent_goes_on(payload: bytes, reason: str) -> None:
    transport = MemoryTransport()
    agent, _ = _agent(ScriptedGenerator(), transport)
    agent.handle(Message("zigbee2mqtt/fridge", payload))
    agent.handle(Message("zigbee2mqtt/fridge", b'{"temperature": 4}'))
    (letter,) = transport.on("t/deadletter")
    assert (letter["reason"], letter["topic"]) == (reason, "zigbee2mqtt/fridge")
    assert agent.events_total == 1
    assert agent.deadletters_total == 1


def test_a_threshold_anomaly_is_published_and_rate_limited() -> None:
    transport = MemoryTransport()
    gen = ScriptedGenerator("CO2 is high.", "CO2 is high.")
    worker = InferenceWorker(gen, max_backlog=4)
    narrator = Narrator(worker, NarratorConfig(32, 32, 10.0))
    route = Route.build("zigbee2mqtt/#", "zigbee2mqtt", "office")
    config = AgentConfig(
        TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536, anomaly_min_interval_s=300
    )
    detector = AnomalyDetector(thresholds={"co2": {"min": None, "max": 1200}}, cooldown_s=0)
    agent = Agent(transport, narrator, (route,), config, WindowStore(600), detector, lambda: 50.0)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        for value in (800, 1300, 900, 1400):
            agent.handle(Message("zigbee2mqtt/office", json.dumps({"co2": value}).encode()))
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(scenario())
    anomalies = transport.on("t/anomaly")
    assert [(a["event_type"], a["value"]) for a in anomalies] == [
        ("started", 1300),
        ("resolved", 900),
        ("started", 1400),
    ]
    assert {a["kind"] for a in anomalies} == {"threshold"}
    summaries = transport.on("t/summary")
    assert len(summaries) == 1  # the second start came within anomaly_min_interval_s
    assert summaries[0]["severity"] == "alert"


def test_an_expired_question_gets_an_expired_error_not_an_answer() -> None:
    transport = MemoryTransport()
    now = [1000.0]
    gen = ScriptedGenerator("late", "on time")
    worker = InferenceWorker(gen, max_backlog=4)
    narrator = Narrator(worker, NarratorConfig(32, 32, 10.0))
    route = Route.build("zigbee2mqtt/#", "zigbee2mqtt", None)
    config = AgentConfig(TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536)
    agent = Agent(
        transport, narrator, (route,), config, WindowStore(600), AnomalyDetector(), lambda: now[0]
    )

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        request = AskRequest.from_payload(
            b"hello?", default_reply_to="t/answer", expiry_s=5, now=now[0]
        )
        now[0] += 10  # the question waited in the backlog past its expiry
        assert await asyncio.wait_for(agent.answer(request), 5) is None
        fresh = AskRequest.from_payload(
            b'{"id": 3, "q": "hi"}', default_reply_to="t/answer", expiry_s=60, now=now[0]
        )
        assert await asyncio.wait_for(agent.answer(fresh), 5) is not None
        task.cancel()

    asyncio.run(scenario())
    replies = [(t, json.loads(p), kw.get("expiry_s")) for t, p, kw in transport.published]
    # The expired question gets its one reply, an error, and no generation ran for it.
    assert [(t, doc["id"], doc.get("error"), expiry) for t, doc, expiry in replies] == [
        ("t/answer", None, "expired", None),
        ("t/answer", "3", None, 60),
    ]
    assert replies[0][1] == {"schema_version": 1, "id": None, "error": "expired"}
    assert agent.ask_errors_total == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"", "empty"), (b'{"q": 3}', "expected"), (b'{"q": "x", "reply_to": "a/#"}', "wildcard")],
)
def test_bad_questions_are_refused_with_a_reason(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AskRequest.from_payload(payload, default_reply_to="t/answer", now=0.0)


def test_a_reading_written_with_another_metrics_unit_gives_a_fallback() -> None:
    gen = ScriptedGenerator("The fridge is at 61 °C.")
    transport = MemoryTransport()
    store = WindowStore(600)
    agent, worker = _agent(gen, transport, store)
    _summarise(agent, worker, [{"temperature": 4.5, "humidity": 61}], store)
    (summary,) = transport.on("t/summary/kitchen")
    assert summary["fallback_reason"] == "grounding: no finding has 61 °C"


class GatedGenerator(ScriptedGenerator):
    """Holds each generation until the test opens the gate."""

    def __init__(self, *texts: str) -> None:
        super().__init__(*texts)
        self.gate = threading.Event()

    def generate(self, request: GenerationRequest) -> Generation:
        self.gate.wait(timeout=10)
        return super().generate(request)


def test_an_ask_dropped_from_a_full_backlog_gets_a_busy_reply() -> None:
    """Every ask gets one reply: the one that waited longest is told it was dropped."""
    transport = MemoryTransport()
    gen = GatedGenerator("first.", "second.", "third.")
    worker = InferenceWorker(gen, max_backlog=1)
    narrator = Narrator(worker, NarratorConfig(32, 32, 10.0))
    config = AgentConfig(TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536)
    agent = Agent(transport, narrator, (), config, WindowStore(600), AnomalyDetector(), lambda: 0.0)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        for n, reply in ((1, "r/1"), (2, "r/2"), (3, "r/3")):
            payload = json.dumps({"id": n, "q": f"question {n}?", "reply_to": reply})
            agent.handle(Message("t/ask", payload.encode(), correlation_data=b"c%d" % n))
            await asyncio.sleep(0.05)  # ask 1 runs; 2 waits; 3 pushes 2 out
        gen.gate.set()
        deadline = asyncio.get_running_loop().time() + 5
        while len(transport.published) < 3:
            assert asyncio.get_running_loop().time() < deadline, transport.published
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    replies = {t: (json.loads(p), kw) for t, p, kw in transport.published}
    assert sorted(replies) == ["r/1", "r/2", "r/3"]
    busy, kw = replies["r/2"]
    assert busy == {"schema_version": 1, "id": "2", "error": "busy"}
    assert kw["correlation_data"] == b"c2"
    assert replies["r/1"][0]["answer"] == "first."
    assert replies["r/3"][0]["answer"] == "second."
    assert agent.ask_errors_total == 1


def test_a_closed_zigbee2mqtt_door_is_never_reported_open() -> None:
    gen = ScriptedGenerator("The front door is open.", "Yes, the front door is open.")
    transport = MemoryTransport()
    store = WindowStore(600)
    agent, worker = _agent(gen, transport, store, area="hallway")

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        agent.handle(Message("zigbee2mqtt/front_door", b'{"contact": true, "battery": 94}'))
        await asyncio.wait_for(agent.summarise("hallway", store.facts(1000.0), end=1000.0), 5)
        request = AskRequest.from_payload(
            b"Is the front door open?", default_reply_to="t/answer", now=1000.0
        )
        await asyncio.wait_for(agent.answer(request), 5)
        task.cancel()

    asyncio.run(scenario())
    (summary,) = transport.on("t/summary/hallway")
    assert summary["fallback"] is True
    assert summary["text"] == "All quiet. Front door is closed."
    assert summary["title"] == "Hallway: Front door closed"
    (answer,) = transport.on("t/answer")
    assert answer["fallback"] is True
    assert answer["answer"] == "No, front door is closed."


def test_the_digest_publishes_a_whole_home_summary() -> None:
    transport = MemoryTransport()
    gen = ScriptedGenerator("CO2 is 1,250 ppm.", "It is 20.5 °C.")
    store = WindowStore(600)
    agent, worker = _agent(gen, transport, store, area=None)
    agent.handle(Message("zigbee2mqtt/office", b'{"co2": 1250}'))
    agent.handle(Message("zigbee2mqtt/attic", b'{"temperature": 20.5}'))

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(agent.digest(1000.0), 5)
        task.cancel()

    asyncio.run(scenario())
    (home,) = transport.on("t/summary")
    # One group (readings without an area): its own narrated summary is the home's.
    assert home["text"] == "CO2 is 1,250 ppm."
    assert home["severity"] == "alert"  # CO2 is past its limit: every summary says so


def test_an_area_keeps_its_alert_while_an_excursion_is_open() -> None:
    transport = MemoryTransport()
    text = "CO2 is 1,100 ppm, above the 1,000 ppm limit."
    gen = ScriptedGenerator(text, text)
    store = WindowStore(600)
    exc = Excursion("office", "co2", 1000.0, "above", 900.0, 1487.0, 1100.0, "ppm", "office")
    agent, worker = _agent(
        gen, transport, store, area="office", excursions=lambda a: [exc] if a == "office" else []
    )
    agent.handle(Message("zigbee2mqtt/office", b'{"co2": 1100, "temperature": 21}'))

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(agent.digest(1000.0), 5)
        task.cancel()

    asyncio.run(scenario())
    (area,) = transport.on("t/summary/office")
    assert area["severity"] == "alert"
    assert area["text"] == text
    assert area["title"].startswith("Office: CO2 1,100 ppm (above 1,000 ppm)")


def test_the_home_summary_has_a_sentence_per_area_with_news() -> None:
    from edge_agent.ingest import SourceOptions

    transport = MemoryTransport()
    gen = ScriptedGenerator("It is 20.5 °C.", "CO2 is 1,250 ppm, above the 1,200 ppm limit.")
    worker = InferenceWorker(gen, max_backlog=4)
    narrator = Narrator(worker, NarratorConfig(32, 32, 10.0, limits={"co2": (None, 1200.0)}))
    areas = SourceOptions(device_areas={"office": "office", "attic": "attic"})
    route = Route.build("zigbee2mqtt/#", "zigbee2mqtt", None, areas)
    config = AgentConfig(TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536)
    store = WindowStore(600)
    agent = Agent(transport, narrator, (route,), config, store, AnomalyDetector(), lambda: 1000.0)
    agent.handle(Message("zigbee2mqtt/office", b'{"co2": 1250}'))
    agent.handle(Message("zigbee2mqtt/attic", b'{"temperature": 20.5}'))

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(agent.digest(1000.0), 5)
        task.cancel()

    asyncio.run(scenario())
    (home,) = transport.on("t/summary")
    assert home["text"] == "Office: CO2 is 1,250 ppm, above the 1,200 ppm limit."
    assert home["title"] == "Office: CO2 1,250 ppm"
    assert (home["fallback"], home["severity"], home["area"]) == (False, "alert", None)
    assert [s["area"] for s in transport.on("t/summary/attic")] == ["attic"]


def test_an_ask_among_a_thousand_devices_is_about_the_one_it_names() -> None:
    transport = MemoryTransport()
    gen = ScriptedGenerator("The freezer is fine.", "The fridge reads 4.5 °C.")
    store = WindowStore(600, max_series=5000, max_devices=5000)
    agent, worker = _agent(gen, transport, store, area=None)
    agent.handle(Message("zigbee2mqtt/fridge", b'{"temperature": 4.5}'))
    agent.handle(Message("zigbee2mqtt/freezer", b'{"temperature": -18}'))
    for i in range(1000):  # newer than both: a flood of distinct names
        agent.handle(Message(f"zigbee2mqtt/dev-{i:06d}", b'{"temperature": 21}'))
    assert store.series_count == 1002

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        for n in (1, 2):
            request = AskRequest.from_payload(
                json.dumps({"id": n, "q": "How cold is the fridge?"}).encode(),
                default_reply_to="t/answer",
                now=1000.0,
            )
            await asyncio.wait_for(agent.answer(request), 5)
        task.cancel()

    asyncio.run(scenario())
    wrong, right = transport.on("t/answer")
    # The asked device reaches the prompt though a thousand newer ones crowd the store;
    # naming another known device, not shown, is refused by the grounding check.
    assert "4.5 °C" in gen.prompts[0]
    assert "-18" not in gen.prompts[0]
    assert wrong["facts"] == ["fridge.temperature"]
    assert wrong["fallback"] is True
    assert wrong["reason"].lower() == "grounding: 'freezer' is not in the findings"
    assert (right["answer"], right["fallback"]) == ("The fridge reads 4.5 °C.", False)
