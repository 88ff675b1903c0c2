"""Meaning before numbers: kinds, state words and display names."""

from __future__ import annotations

import pytest

from edge_agent.domain import MetricFacts
from edge_agent.semantics import Naming, classify, humanize, meaning


def _binary(device: str, metric: str, last: float = 1.0) -> MetricFacts:
    return MetricFacts(device, metric, 3, last, 0.0, 1.0, 0.5, 0.0, 60.0)


@pytest.mark.parametrize(
    ("device", "metric", "unit", "binary", "kind", "shown"),
    [
        ("living room/sensor", "temperature", "°C", False, "level", "°C"),
        ("office", "Light", None, False, "level", "lx"),  # UCI column, no unit in the payload
        ("office", "HumidityRatio", None, False, "diagnostic", ""),
        ("front_door", "battery", "%", False, "diagnostic", "%"),
        ("front_door", "linkquality", "lqi", False, "diagnostic", "lqi"),
        ("plug", "power", "W", False, "level", "W"),
        ("meter", "energy", "kWh", False, "counter", "kWh"),
        ("front_door", "contact", None, True, "state", ""),
        ("sensor.office_co2", "state", None, False, "level", "ppm"),
    ],
)
def test_every_metric_has_a_kind(
    device: str, metric: str, unit: str | None, binary: bool, kind: str, shown: str
) -> None:
    m = classify(device, metric, unit, binary)
    assert (m.kind, m.unit) == (kind, shown)


def test_zigbee2mqtt_contact_true_means_closed() -> None:
    m = meaning(_binary("front_door", "contact"))
    assert m.vocabulary is not None
    assert m.vocabulary.lang("en").current(True)[0] == "closed"
    assert m.vocabulary.lang("en").current(False)[0] == "open"
    assert m.vocabulary.lang("fr").current(True)[0] == "fermée"


@pytest.mark.parametrize(
    ("device", "metric", "on", "off"),
    [
        ("office", "occupancy", "occupied", "empty"),
        ("kitchen", "water_leak", "leak detected", "dry"),
        ("plug", "state", "on", "off"),
        ("binary_sensor.back_door", "state", "open", "closed"),  # Home Assistant: on = open
        ("lock.front", "state", "locked", "unlocked"),
    ],
)
def test_binary_states_have_words(device: str, metric: str, on: str, off: str) -> None:
    m = meaning(_binary(device, metric))
    assert m.vocabulary is not None
    words = m.vocabulary.lang("en")
    assert (words.current(True)[0], words.current(False)[0]) == (on, off)


@pytest.mark.parametrize(
    ("ident", "name"),
    [
        ("living_room", "Living room"),
        ("binary_sensor.front_door", "Front door"),
        ("office/co2", "Office CO2"),
        ("kitchenSensor", "Kitchen sensor"),
    ],
)
def test_ids_are_humanized(ident: str, name: str) -> None:
    assert humanize(ident) == name


def test_display_names_prefer_config_then_announced_names() -> None:
    names = Naming({"0x00158d0001a2b3c4": "Front door"}, {"living_room": "Lounge"})
    assert names.device("0x00158d0001a2b3c4") == "Front door"
    assert names.device("0x00158d0001ffffff", "hallway") == "Hallway sensor"
    assert names.device("hallway/front_door", "hallway") == "Front door"
    names.learn("sensor.x", "Desk lamp")
    assert names.device("sensor.x") == "Desk lamp"
    assert names.area("living_room") == "Lounge"
    assert names.area("guest_room") == "Guest room"


def test_home_assistant_friendly_names_are_learned_from_statestream() -> None:
    from edge_agent.ingest import Payload, SourceOptions, build_source

    names = Naming()
    source = build_source(
        "homeassistant/#", "statestream", None, SourceOptions(on_name=names.learn)
    )
    topic = "homeassistant/binary_sensor/front_door_contact"
    assert source.parse(f"{topic}/friendly_name", Payload('"Porte d\'entrée"'.encode()), 1.0) == []
    (event,) = source.parse(f"{topic}/state", Payload(b"off"), 2.0)
    assert names.device(event.device) == "Porte d'entrée"
    # A configured name still wins over an announced one.
    configured = Naming({"binary_sensor.front_door_contact": "Front door"})
    configured.learn("binary_sensor.front_door_contact", "Porte d'entrée")
    assert configured.device("binary_sensor.front_door_contact") == "Front door"
