"""zigbee2mqtt adapter contract: device state, friendly names with '/', availability, bridge."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest import Payload, SourceOptions, build_source

NOW = 1_700_000_000.0


def parse(topic: str, payload: bytes, area: str | None = None, **opts: Any) -> list[SensorEvent]:
    source = build_source("zigbee2mqtt/#", "zigbee2mqtt", area, SourceOptions(**opts))
    return source.parse(topic, Payload(payload), NOW)


def by_metric(events: list[SensorEvent]) -> dict[str, SensorEvent]:
    return {e.metric: e for e in events}


def test_climate_sensor_state_becomes_one_event_per_reading() -> None:
    # WSDCGQ11LM as documented on zigbee2mqtt.io: numbers, plus a text field to ignore.
    payload = (
        b'{"temperature":21.34,"humidity":44.72,"pressure":1012.4,"battery":91,'
        b'"voltage":2985,"linkquality":87,"last_seen":"2024-05-01T12:00:00+02:00"}'
    )
    events = by_metric(parse("zigbee2mqtt/kitchen_climate", payload, area="kitchen"))
    assert set(events) == {
        "temperature",
        "humidity",
        "pressure",
        "battery",
        "voltage",
        "linkquality",
    }
    temp = events["temperature"]
    assert (temp.device, temp.value, temp.unit, temp.area) == (
        "kitchen_climate",
        21.34,
        "°C",
        "kitchen",
    )
    # last_seen is the readings' own time, and not a reading itself.
    assert (temp.ts, temp.topic) == (1714557600.0, "zigbee2mqtt/kitchen_climate")
    assert events["pressure"].unit == "hPa"


def test_friendly_name_with_slash_is_the_whole_device_name() -> None:
    events = parse("zigbee2mqtt/living room/sensor", b'{"temperature":20.5,"occupancy":true}')
    assert {(e.device, e.metric, e.value) for e in events} == {
        ("living room/sensor", "temperature", 20.5),
        ("living room/sensor", "occupancy", 1.0),
    }


def test_light_state_on_off_and_booleans_are_numbers() -> None:
    payload = b'{"state":"ON","brightness":215,"color_temp":325,"color":{"x":0.4,"y":0.3}}'
    events = by_metric(parse("zigbee2mqtt/hall/ceiling", payload))
    assert events["state"].value == 1.0
    assert events["brightness"].value == 215.0
    assert "color" not in events  # nested objects are not readings


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b"online", 1.0),  # advanced.legacy_availability_payload: true
        (b"offline", 0.0),
        (b'{"state":"online"}', 1.0),  # the default since zigbee2mqtt 1.x/2.0
        (b'{"state":"offline"}', 0.0),
    ],
)
def test_availability_in_both_forms(payload: bytes, value: float) -> None:
    [event] = parse("zigbee2mqtt/living room/sensor/availability", payload)
    assert (event.device, event.metric, event.value) == ("living room/sensor", "available", value)


def test_availability_object_without_state_is_unknown_shape() -> None:
    with pytest.raises(PayloadError) as err:
        parse("zigbee2mqtt/plug/availability", b'{"status":"online"}')
    assert err.value.reason == "unknown_shape"


def test_availability_with_another_word_is_wrong_type() -> None:
    with pytest.raises(PayloadError) as err:
        parse("zigbee2mqtt/plug/availability", b"maybe")
    assert err.value.reason == "wrong_type"


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("zigbee2mqtt/bridge/state", b'{"state":"online"}'),
        ("zigbee2mqtt/bridge/state", b"online"),
        ("zigbee2mqtt/bridge/info", b'{"version":"2.1.1","coordinator":{"type":"zStack3x0"}}'),
        ("zigbee2mqtt/bridge/devices", b"[]"),
        ("zigbee2mqtt/bridge/logging", b'{"level":"info","message":"MQTT publish"}'),
        ("zigbee2mqtt/plug/set", b'{"state":"ON"}'),
        ("zigbee2mqtt/plug/get", b'{"state":""}'),
        ("zigbee2mqtt/plug/set/state", b"ON"),
        ("zigbee2mqtt/plug", b""),  # a retained message being cleared
    ],
)
def test_bridge_request_and_empty_topics_are_skipped(topic: str, payload: bytes) -> None:
    assert parse(topic, payload) == []


def test_button_with_only_an_action_has_no_usable_fields() -> None:
    with pytest.raises(PayloadError) as err:
        parse("zigbee2mqtt/button", b'{"action":"single"}')
    assert err.value.reason == "no_usable_fields"


def test_config_units_win_over_builtin_guess_and_device_areas_over_area() -> None:
    events = by_metric(
        parse(
            "zigbee2mqtt/garage/meter",
            b'{"voltage":231.5,"power":12}',
            area="house",
            units={"voltage": "V"},
            device_areas={"garage/meter": "garage"},
        )
    )
    assert (events["voltage"].unit, events["voltage"].area) == ("V", "garage")
    assert events["power"].unit == "W"
