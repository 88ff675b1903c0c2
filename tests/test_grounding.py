"""The grounding check catches invented numbers and names, and passes honest text."""

from __future__ import annotations

import pytest

from edge_agent.domain import MetricFacts
from edge_agent.grounding import (
    GroundingResult,
    check_grounding,
    fact_numbers,
    fact_units,
    numbers_in,
    quantities_in,
)

KITCHEN = MetricFacts("kitchen", "temperature", 4, 21.46, 20.0, 22.5, 21.2, 0, 60, "°C")
CO2 = MetricFacts("living_room", "co2", 4, 1412, 600, 1412, 900.25, 0, 60, "ppm")


def _check(
    text: str, known: tuple[str, ...] = ("kitchen", "living_room", "bedroom")
) -> GroundingResult:
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


BATH_RH = MetricFacts("bathroom", "humidity", 4, 42.8, 41.0, 45.0, 43.1, 0, 60, "%")
BATH_T = MetricFacts(
    "bathroom", "temperature", 4, 18.9, 18.5, 19.2, 18.8, 0, 60, "°C", slope_per_h=1.2
)


def _check_units(text: str) -> GroundingResult:
    facts = (BATH_RH, BATH_T)
    return check_grounding(
        text, fact_numbers(facts), ("bathroom",), ("bathroom",), fact_units(facts)
    )


@pytest.mark.parametrize(
    "text",
    [
        "The bathroom is at 18.9 °C with 42.8 % humidity.",
        "Humidity peaked at 45% and it is 18.9 degrees.",
        "It is 18.9 ºC (a look-alike of the degree sign).",
        "The bathroom is warming by 1.2 °C per hour.",
        "Humidity is 42.8 percent.",
    ],
)
def test_numbers_with_their_own_unit_pass(text: str) -> None:
    assert _check_units(text).ok, _check_units(text).reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # The number is a reading, but of the humidity: a small model's favourite slip.
        ("The bathroom is at 42.8 °C.", "no reading in °C is 42.8"),
        ("Humidity is 18.9 %.", "no reading in % is 18.9"),
        ("It is 45 degrees in the bathroom.", "no reading in degrees is 45"),
    ],
)
def test_a_reading_given_another_metrics_unit_fails(text: str, reason: str) -> None:
    result = _check_units(text)
    assert not result.ok
    assert reason in result.reason


def test_quantities_are_read_with_their_unit() -> None:
    units = {"ppm", "%", "°c", "kwh"}
    assert quantities_in("1,412 ppm; 42.8%; 21,5 °C; 3 kWh; 7 apples", units) == [
        (1412.0, 0, ("ppm",), "ppm"),
        (42.8, 1, ("%",), "%"),
        (21.5, 1, ("°c",), "°C"),
        (3.0, 0, ("kwh",), "kWh"),
    ]
    # A word for a unit means the units of that kind the facts have.
    assert quantities_in("20 degrees", {"°c"}) == [(20.0, 0, ("°c",), "degrees")]
    assert quantities_in("20 degrees", {"%"}) == []
