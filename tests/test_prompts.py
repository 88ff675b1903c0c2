"""Prompts v5: findings as notes, examples no reading can be mistaken for, answers that
pick what the question is about; and the action prompt's fact lines."""

from __future__ import annotations

import re
from datetime import UTC

from edge_agent.domain import MetricFacts
from edge_agent.findings import FindingRules, find
from edge_agent.grounding import read_number
from edge_agent.prompts import (
    answer_prompt,
    cut,
    describe_fact,
    fallback_answer,
    fit_facts,
    relevant,
    summary_prompt,
)
from edge_agent.semantics import Naming

H = 3600.0


def _fact(
    device: str,
    metric: str,
    last: float = 1.0,
    unit: str | None = None,
    changes: tuple[tuple[float, float], ...] = (),
    area: str | None = None,
) -> MetricFacts:
    return MetricFacts(
        device, metric, 5, last, 0.0, last, last / 2, 0.0, 60.0, unit, area, changes=changes
    )


def _home() -> list[MetricFacts]:
    return [
        _fact(
            "hallway/front_door", "contact", 1.0, changes=((9 * H + 40 * 60, 1.0),), area="hallway"
        ),
        MetricFacts(
            "living_room/climate", "co2", 9, 701, 690, 705, 700, 0, H, "ppm", "living_room"
        ),
        MetricFacts(
            "living_room/climate", "temperature", 9, 21.4, 21, 22, 21.4, 0, H, "°C", "living_room"
        ),
    ]


def _numbers(text: str) -> set[float]:
    return {r[0] for t in re.findall(r"\d+(?:[.,]\d+)*", text) if (r := read_number(t))}


def test_a_summary_prompt_shows_the_top_findings_as_notes() -> None:
    found = find(_home()[1:], rules=FindingRules(tz=UTC), names=Naming())
    prompt = summary_prompt("Living room", found.items, style="completion")
    assert prompt.dynamic == (
        "Notes (Living room):\n- nothing notable\n- temperature 21.4 °C\n- CO2 701 ppm\nSummary:"
    )
    assert "_" not in prompt.text


def test_no_example_number_is_also_citable() -> None:
    # Readings equal to every first-choice example number: each must be swapped.
    facts = [
        MetricFacts("study/x", "temperature", 9, 23.7, 23, 24, 23.5, 0, H, "°C", "study"),
        MetricFacts("study/x", "co2", 9, 1130, 1100, 1140, 1120, 0, H, "ppm", "study"),
        MetricFacts("study/x", "humidity", 9, 49, 48, 50, 49, 0, H, "%", "study"),
    ]
    found = find(facts, rules=FindingRules(tz=UTC), names=Naming())
    prompt = summary_prompt("Study", found.items, style="completion")
    citable = {n.value for f in found.items for n in f.numbers}
    examples = _numbers(prompt.static)
    assert not any(abs(a - b) <= 0.5 for a in citable for b in examples), citable & examples


def test_french_prompts_have_french_examples() -> None:
    found = find(_home()[1:], rules=FindingRules(language="fr", tz=UTC), names=Naming())
    prompt = summary_prompt("Salon", found.items, style="completion", language="fr")
    assert "Résumé :" in prompt.static
    assert "Write in French" in prompt.static
    assert prompt.dynamic.endswith("Résumé :")


def test_a_question_selects_the_findings_it_is_about() -> None:
    found = find(_home(), rules=FindingRules(tz=UTC), names=Naming())
    (door,) = relevant("Is the front door open?", found.items, 1)
    assert door.metric == "contact"
    (co2,) = relevant("What is the CO2 level in the living room?", found.items, 1)
    assert co2.metric == "co2"
    prompt = answer_prompt("Is the front door open?", (door,), style="completion")
    assert "Question: Is the front door open?\nAnswer:" in prompt.dynamic


def test_a_fallback_answer_answers_the_question() -> None:
    found = find(_home(), rules=FindingRules(tz=UTC), names=Naming())
    shown = relevant("Is the front door open?", found.items)
    assert fallback_answer("Is the front door open?", shown) == (
        "No, front door has been closed since 09:40."
    )
    shown = relevant("What is the CO2 level in the living room?", found.items)
    assert fallback_answer("What is the CO2 level?", shown).startswith(
        "Living room: CO2 is 701 ppm."
    )


def test_long_text_is_cut_at_a_word_with_an_ellipsis() -> None:
    text = "word " * 80
    out = cut(text, 255)
    assert len(out) <= 255
    assert out.endswith("word…")


def test_a_binary_sensor_line_gives_its_changes_not_min_and_max() -> None:
    door = _fact("garage", "door", 1.0, changes=((10.0, 1.0), (20.0, 0.0), (30.0, 1.0)))
    assert describe_fact(door) == "- garage door: now 1, changed 3 times"
    temp = _fact("garage", "temperature", 8.5, unit="°C")
    assert describe_fact(temp) == "- garage temperature: now 8.5 °C, min 0, max 8.5"


def test_action_fact_lines_lead_with_temperature_then_humidity() -> None:
    facts = [_fact("lounge", "co2"), _fact("lounge", "humidity"), _fact("lounge", "temperature")]
    chosen = fit_facts(facts, 10_000, len)
    assert [f.metric for f in chosen] == ["temperature", "humidity", "co2"]
