"""Home Assistant mqtt_statestream adapter contract: state text and JSON attributes."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest import Payload, SourceOptions, build_source

NOW = 1_700_000_000.0


def parse(topic: str, payload: bytes, **opts: Any) -> list[SensorEvent]:
    source = build_source("homeassistant/#", "statestream", "home", SourceOptions(**opts))
    return source.parse(topic, Payload(payload), NOW)


def test_numeric_state_is_the_state_metric_of_the_entity() -> None:
    [event] = parse(
        "homeassistant/sensor/living_room_temperature/state",
        b"21.5",
        units={"sensor.living_room_temperature.state": "°C"},
    )
    assert (event.device, event.metric, event.value) == (
        "sensor.living_room_temperature",
        "state",
        21.5,
    )
    assert (event.unit, event.area, event.topic) == (
        "°C",
        "home",
        "homeassistant/sensor/living_room_temperature/state",
    )


@pytest.mark.parametrize(
    ("topic", "payload", "value"),
    [
        ("homeassistant/binary_sensor/hall_motion/state", b"on", 1.0),
        ("homeassistant/switch/coffee_maker/state", b"off", 0.0),
        ("homeassistant/cover/garage_door/state", b"open", 1.0),
        ("homeassistant/device_tracker/phone/state", b"not_home", 0.0),
        ("homeassistant/sensor/power_meter/state", b"-12", -12.0),
    ],
)
def test_binary_and_numeric_states(topic: str, payload: bytes, value: float) -> None:
    [event] = parse(topic, payload)
    assert event.value == value


@pytest.mark.parametrize("payload", [b"unavailable", b"unknown", b"Unavailable"])
def test_unavailable_and_unknown_are_skipped_not_dead_lettered(payload: bytes) -> None:
    assert parse("homeassistant/sensor/outdoor_temperature/state", payload) == []


def test_numeric_attribute_is_an_event_named_after_the_attribute() -> None:
    [event] = parse("homeassistant/climate/hallway/current_temperature", b"20.5")
    assert (event.device, event.metric, event.value) == (
        "climate.hallway",
        "current_temperature",
        20.5,
    )


@pytest.mark.parametrize(
    ("leaf", "payload"),
    [
        ("unit_of_measurement", b'"\\u00b0C"'),
        ("friendly_name", b'"Living room temperature"'),
        ("device_class", b'"temperature"'),
        ("options", b'["a", "b"]'),
        ("last_changed", b'"2024-05-01T10:00:00.123456+00:00"'),
        ("last_updated", b'"2024-05-01T10:00:00.123456+00:00"'),
    ],
)
def test_text_attributes_and_timestamps_are_skipped(leaf: str, payload: bytes) -> None:
    assert parse(f"homeassistant/sensor/living_room_temperature/{leaf}", payload) == []


def test_boolean_attribute_is_a_number() -> None:
    [event] = parse("homeassistant/light/kitchen/is_deconz_group", b"true")
    assert event.value == 1.0


def test_text_state_is_wrong_type() -> None:
    with pytest.raises(PayloadError) as err:
        parse("homeassistant/climate/hallway/state", b"heat")
    assert err.value.reason == "wrong_type"


def test_attribute_that_is_not_json_is_not_json() -> None:
    with pytest.raises(PayloadError) as err:
        parse("homeassistant/light/kitchen/brightness", b"{255")
    assert err.value.reason == "not_json"


def test_topic_too_short_is_unknown_shape() -> None:
    with pytest.raises(PayloadError) as err:
        parse("homeassistant/sensor", b"1")
    assert err.value.reason == "unknown_shape"
