"""The grounding check catches invented numbers and names, and passes honest text."""

from __future__ import annotations

import pytest

from edge_agent.domain import MetricFacts
from edge_agent.grounding import check_grounding, fact_numbers, numbers_in

KITCHEN = MetricFacts("kitchen", "temperature", 4, 21.46, 20.0, 22.5, 21.2, 0, 60, "°C")
CO2 = MetricFacts("living_room", "co2", 4, 1412, 600, 1412, 900.25, 0, 60, "ppm")


def _check(text: str, known: tuple[str, ...] = ("kitchen", "living_room", "bedroom")):
    facts = (KITCHEN, CO2)
    return check_grounding(text, fact_numbers(facts), ("kitchen", "living_room"), known)


@pytest.mark.parametrize(
    "text",
    [
        "The kitchen is at 21.5 °C, between 20 and 22.5.",
        "Kitchen: 21.46 degrees; the living room CO2 peaked at 1,412 ppm.",
        "La cuisine est à 21,5 °C.",
        "CO2 in the living room averaged about 900 ppm over 4 readings.",
        "All quiet.",
    ],
)
def test_honest_text_passes(text: str) -> None:
    assert _check(text).ok, _check(text).reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The kitchen is at 23.1 °C.", "number 23.1"),
        ("CO2 reached 2,000 ppm.", "number 2000"),
        ("The kitchen is at 21.47 °C.", "number 21.47"),  # more precise than the fact allows
        ("The bedroom is warm at 21.5 °C.", "'bedroom'"),
    ],
)
def test_invented_numbers_and_names_fail(text: str, reason: str) -> None:
    result = _check(text)
    assert not result.ok
    assert reason in result.reason


def test_numbers_are_read_as_people_write_them() -> None:
    assert numbers_in("1,400 ppm, 21,5 °C, -3 °C, 0.25") == [
        (1400.0, 0),
        (21.5, 1),
        (-3.0, 0),
        (0.25, 2),
    ]
