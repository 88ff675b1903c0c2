"""The bench's independent scorer, held to hand-labelled texts (issue 20's among them)."""

from __future__ import annotations

import pytest

from edge_agent.bench.scorer import Row, Window, score

H = 3600.0
OFFICE = Window(
    rows=(
        Row(8 * H, "Temperature", 20.5),
        Row(9 * H, "Temperature", 20.39),
        Row(8 * H, "Humidity", 27.2),
        Row(9 * H, "Humidity", 27.5),
        Row(8 * H, "CO2", 980.0),
        Row(9 * H, "CO2", 1069.97),
        Row(8 * H, "Light", 0.0),
        Row(8 * H + 12 * 60, "Light", 454.0),
        Row(8 * H, "Occupancy", 0.0),
        Row(8 * H + 12 * 60, "Occupancy", 1.0),
    ),
    limits={"co2": (1000.0,)},
)
HALL = Window(
    rows=(
        Row(9 * H, "battery", 94.0),
        Row(9 * H, "humidity", 46.2),
        Row(9 * H, "contact", 1.0),  # zigbee2mqtt: closed
        Row(9 * H + 40 * 60, "contact", 0.0),
        Row(9 * H + 41 * 60, "contact", 1.0),
    )
)


@pytest.mark.parametrize(
    ("text", "window", "kind"),
    [
        # Quoted in issue 20 (published with fallback: false before):
        ("The office is at 1, min 1, max 1, rising 1069.97 per hour.", OFFICE, "unitless"),
        ("The office is at 20.39 °C and 0 lx, min 0, max 0.", OFFICE, "unitless"),
        ("The office is at 454 lx and 16.73 per hour.", OFFICE, "unitless"),
        (
            "The office is at 824.63 ppm, 59 readings (mean 824.63 ppm, z = 5.0)",
            OFFICE,
            "invented",
        ),
        ("The living room is at 94 % humidity.", HALL, "wrong-role"),
        ("The front door is open.", HALL, "wrong-state"),
        ("Yes, the door is open.", HALL, "wrong-state"),
        # More of the same kinds:
        ("It is 27.5 °C in the office.", OFFICE, "wrong-role"),
        ("CO2 is 980 ppm.", OFFICE, "not-current"),
        ("The office is empty.", OFFICE, "wrong-state"),
        ("Occupied since 07:31.", OFFICE, "time"),
    ],
)
def test_wrong_texts_are_faulted(text: str, window: Window, kind: str) -> None:
    errors = score(text, window)
    assert errors, text
    assert errors[0].kind == kind, errors


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("The office is at 20.4 °C with 28 % humidity.", OFFICE),
        ("The office has been occupied since 08:12; light rose from 0 lx to 454 lx.", OFFICE),
        ("CO2 is 1,070 ppm, above the 1,000 ppm limit.", OFFICE),
        ("The front door is closed; it opened once at 09:40.", HALL),
        ("Front door battery is at 94 %, humidity 46 %.", HALL),
        ("La porte d'entrée est fermée.", HALL),
        ("La porte a été ouverte 1 fois ; elle est fermée maintenant.", HALL),
        ("All quiet.", OFFICE),
    ],
)
def test_true_texts_pass(text: str, window: Window) -> None:
    assert score(text, window) == []
