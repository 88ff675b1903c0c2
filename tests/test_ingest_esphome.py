"""ESPHome (MQTT mode) adapter contract: sensor, binary_sensor and status topics."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest import Payload, SourceOptions, build_source

NOW = 1_700_000_000.0


def parse(topic: str, payload: bytes, flt: str = "livingroom/#", **opts: Any) -> list[SensorEvent]:
    source = build_source(flt, "esphome", "living room", SourceOptions(**opts))
    return source.parse(topic, Payload(payload), NOW)


def test_sensor_state_is_a_number_named_after_the_object_id() -> None:
    [event] = parse("livingroom/sensor/temperature/state", b"21.40", units={"temperature": "°C"})
    assert (event.device, event.metric, event.value, event.unit, event.area) == (
        "livingroom",
        "temperature",
        21.4,
        "°C",
        "living room",
    )


@pytest.mark.parametrize(("payload", "value"), [(b"ON", 1.0), (b"OFF", 0.0)])
def test_binary_sensor_state(payload: bytes, value: float) -> None:
    [event] = parse("livingroom/binary_sensor/motion/state", payload)
    assert (event.device, event.metric, event.value) == ("livingroom", "motion", value)


@pytest.mark.parametrize(("payload", "value"), [(b"online", 1.0), (b"offline", 0.0)])
def test_status_is_availability(payload: bytes, value: float) -> None:
    [event] = parse("livingroom/status", payload)
    assert (event.device, event.metric, event.value) == ("livingroom", "available", value)


def test_node_name_is_relative_to_a_shared_prefix() -> None:
    [event] = parse("esphome/garage/sensor/humidity/state", b"55", flt="esphome/+/sensor/+/state")
    assert event.device == "garage"


@pytest.mark.parametrize(
    "topic",
    [
        "livingroom/text_sensor/version/state",
        "livingroom/switch/relay/command",
        "livingroom/debug",
        "livingroom/light/lamp/state",  # JSON schema, not a single reading
    ],
)
def test_other_components_and_topics_are_skipped(topic: str) -> None:
    assert parse(topic, b"2024.5.0") == []


def test_failed_sensor_read_published_as_nan_is_not_finite() -> None:
    with pytest.raises(PayloadError) as err:
        parse("livingroom/sensor/temperature/state", b"nan")
    assert err.value.reason == "not_finite"


def test_binary_sensor_with_a_number_is_wrong_type() -> None:
    with pytest.raises(PayloadError) as err:
        parse("livingroom/binary_sensor/motion/state", b"1")
    assert err.value.reason == "wrong_type"


def test_state_topic_without_a_node_is_unknown_shape() -> None:
    with pytest.raises(PayloadError) as err:
        parse("sensor/temperature/state", b"1", flt="#")
    assert err.value.reason == "unknown_shape"
