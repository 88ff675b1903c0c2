"""Bad input gives a stable reason code; config ranges, units and routes are applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest

from edge_agent.errors import ConfigError, PayloadError
from edge_agent.ingest import ADAPTERS, Payload, SourceOptions, build_source
from edge_agent.service import Route
from edge_agent.settings import AdapterName, Subscription, load_settings

NOW = 1_700_000_000.0


def reason(adapter: str, flt: str, topic: str, payload: bytes, **kw: Any) -> str:
    max_bytes = kw.pop("max_bytes", 65536)
    source = build_source(flt, adapter, None, SourceOptions(**kw))
    with pytest.raises(PayloadError) as err:
        source.parse(topic, Payload(payload, max_bytes), NOW)
    return err.value.reason


@pytest.mark.parametrize(
    ("adapter", "flt", "topic"),
    [
        ("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/kitchen"),
        ("plain", "home/#", "home/kitchen/temperature"),
        ("esphome", "node/#", "node/sensor/t/state"),
    ],
)
def test_too_large(adapter: str, flt: str, topic: str) -> None:
    assert reason(adapter, flt, topic, b"1" * 65, max_bytes=64) == "too_large"


def test_invalid_utf8() -> None:
    assert (
        reason("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/x", b'{"t":"\xff"}') == "invalid_utf8"
    )
    assert reason("plain", "home/#", "home/x/t", b"2\xc3") == "invalid_utf8"


def test_not_json() -> None:
    assert reason("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/x", b"temperature=21") == "not_json"
    assert reason("tasmota", "tele/#", "tele/x/SENSOR", b'{"AM2301":') == "not_json"


@pytest.mark.parametrize(
    ("adapter", "flt", "topic", "payload", "kw"),
    [
        ("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/x", b'{"temperature":NaN}', {}),
        ("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/x", b'{"temperature":Infinity}', {}),
        ("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/x", b'{"temperature":1e400}', {}),
        ("plain", "home/#", "home/x/t", b"inf", {}),
        ("plain", "home/#", "home/x/t", b"-Infinity", {}),
        ("statestream", "ha/#", "ha/sensor/x/state", b"nan", {}),
        ("generic", "w/+", "w/x", b'{"a":[-1e999]}', {"fields": {"t": "a[0]"}}),
    ],
)
def test_not_finite(adapter: str, flt: str, topic: str, payload: bytes, kw: dict[str, Any]) -> None:
    assert reason(adapter, flt, topic, payload, **kw) == "not_finite"


def test_wrong_type() -> None:
    assert reason("plain", "home/#", "home/x/t", b"twenty") == "wrong_type"
    assert reason("plain", "home/#", "home/x/t", b"1_000") == "wrong_type"
    assert reason("generic", "w/+", "w/x", b'{"t":"21"}', fields={"t": "t"}) == "wrong_type_fields"


def test_out_of_range_rejects_the_message_and_names_the_metric() -> None:
    source = build_source(
        "zigbee2mqtt/#", "zigbee2mqtt", None, SourceOptions(ranges={"temperature": (-40, 85)})
    )
    with pytest.raises(PayloadError) as err:
        source.parse("zigbee2mqtt/x", Payload(b'{"temperature":-273.15,"humidity":40}'), NOW)
    assert (err.value.reason, "temperature" in err.value.detail) == ("out_of_range", True)
    ok = source.parse("zigbee2mqtt/x", Payload(b'{"temperature":85,"humidity":400}'), NOW)
    assert len(ok) == 2  # bounds are inclusive, and unranged metrics pass


def test_per_device_range_wins_over_per_metric_range() -> None:
    ranges = {"state": (0.0, 50.0), "sensor.freezer.state": (-30.0, 0.0)}
    kw: dict[str, Any] = {"ranges": ranges}
    assert reason("statestream", "ha/#", "ha/sensor/freezer/state", b"5", **kw) == "out_of_range"
    source = build_source("ha/#", "statestream", None, SourceOptions(ranges=ranges))
    assert source.parse("ha/sensor/freezer/state", Payload(b"-18"), NOW)[0].value == -18.0


def test_unknown_shape() -> None:
    assert reason("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/x", b"[1,2]") == "unknown_shape"
    assert reason("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/x", b"21.5") == "unknown_shape"
    assert reason("tasmota", "tele/#", "tele/x/STATE", b'"ON"') == "unknown_shape"


def test_no_usable_fields() -> None:
    payload = b'{"action":"single","last_seen":"2024-05-01T12:00:00Z"}'
    assert reason("zigbee2mqtt", "zigbee2mqtt/#", "zigbee2mqtt/btn", payload) == "no_usable_fields"


def test_every_adapter_in_config_has_an_implementation() -> None:
    assert set(get_args(AdapterName)) == set(ADAPTERS)


CONFIG = """
[[sensors.subscriptions]]
topic = "zigbee2mqtt/#"
adapter = "zigbee2mqtt"
area = "house"
device_areas = { "living room/sensor" = "living room" }
ranges = { temperature = [-40, 85] }

[[sensors.subscriptions]]
topic = "homeassistant/+/+/state"
adapter = "statestream"
units = { "sensor.outdoor_temperature.state" = "°C" }

[[sensors.subscriptions]]
topic = "tele/+/+"
adapter = "tasmota"

[[sensors.subscriptions]]
topic = "livingroom/#"
adapter = "esphome"
units = { temperature = "°C", humidity = "%" }

[[sensors.subscriptions]]
topic = "garage/temperature"
adapter = "plain"
device = "garage"
metric = "temperature"
units = { temperature = "°C" }

[[sensors.subscriptions]]
topic = "weather/+"
adapter = "generic"
fields = { temperature = "sensors[0].temp", wind = '$.wind["speed.avg"]' }
"""


def test_toml_config_builds_one_route_per_subscription(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG, encoding="utf-8")
    subs = load_settings(path).sensors.subscriptions
    routes = [Route.build(s.topic, s.adapter, s.area, s.source_options()) for s in subs]
    z2m, _, _, _, garage, weather = (r.source for r in routes)
    [event] = z2m.parse("zigbee2mqtt/living room/sensor", Payload(b'{"temperature":20}'), NOW)
    assert (event.area, event.unit) == ("living room", "°C")
    [event] = garage.parse("garage/temperature", Payload(b"7.5"), NOW)
    assert (event.device, event.metric, event.unit) == ("garage", "temperature", "°C")
    [event] = weather.parse("weather/roof", Payload(b'{"wind":{"speed.avg":3}}'), NOW)
    assert (event.device, event.metric) == ("roof", "wind")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"adapter": "generic"}, "needs 'fields'"),
        ({"adapter": "generic", "fields": {"t": "a[0"}}, "fields.t"),
        ({"adapter": "plain", "fields": {"t": "a"}}, "only used by the generic"),
        ({"adapter": "tasmota", "metric": "t"}, "only used by the plain"),
        ({"adapter": "esphome", "device": "d"}, "only used by the plain and generic"),
        ({"ranges": {"t": [5, 1]}}, "min <= max"),
        ({"adapter": "modbus"}, "literal_error|Input should be"),
    ],
)
def test_subscription_config_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Subscription(topic="a/#", **kw)


def test_duplicate_topic_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[[sensors.subscriptions]]\ntopic = "a/#"\n[[sensors.subscriptions]]\ntopic = "a/#"\n'
    )
    with pytest.raises(ConfigError, match="subscribed twice"):
        load_settings(path)
