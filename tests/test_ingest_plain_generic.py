"""Plain-text and generic-JSON adapter contracts, and the JSON path language."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.domain import SensorEvent
from edge_agent.errors import ConfigError, PayloadError
from edge_agent.ingest import Payload, SourceOptions, build_source
from edge_agent.ingest.paths import MISSING, compile_path, resolve

NOW = 1_700_000_000.0


def parse(adapter: str, flt: str, topic: str, payload: bytes, **opts: Any) -> list[SensorEvent]:
    source = build_source(flt, adapter, None, SourceOptions(**opts))
    return source.parse(topic, Payload(payload), NOW)


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b"21.5", 21.5),
        (b" -3 \n", -3.0),
        (b"1e3", 1000.0),
        (b"ON", 1.0),
        (b"off", 0.0),
        (b"true", 1.0),
        (b"False", 0.0),
    ],
)
def test_plain_values(payload: bytes, value: float) -> None:
    [event] = parse("plain", "home/+/temperature", "home/kitchen/temperature", payload)
    assert (event.device, event.metric, event.value) == ("kitchen", "temperature", value)


def test_plain_device_and_metric_from_config() -> None:
    [event] = parse(
        "plain",
        "sensors/garage_temp",
        "sensors/garage_temp",
        b"12.5",
        device="garage",
        metric="temperature",
        units={"temperature": "°C"},
    )
    assert (event.device, event.metric, event.unit) == ("garage", "temperature", "°C")


def test_plain_one_level_remainder_is_the_device_with_a_value_metric() -> None:
    [event] = parse("plain", "meters/+", "meters/water", b"1234.5")
    assert (event.device, event.metric) == ("water", "value")


def test_plain_text_is_wrong_type() -> None:
    with pytest.raises(PayloadError) as err:
        parse("plain", "home/#", "home/kitchen/temperature", b"warm")
    assert err.value.reason == "wrong_type"


WEATHER = (
    b'{"station":"roof","sensors":[{"temp":18.5,"hum":71},{"temp":17.9}],'
    b'"wind":{"speed.avg":3.4,"gust":null},"rain":false}'
)


def test_generic_reads_each_configured_path() -> None:
    events = parse(
        "generic",
        "weather/+",
        "weather/roof-station",
        WEATHER,
        fields={
            "temperature": "sensors[0].temp",
            "humidity": "$.sensors[0].hum",
            "temperature_2": "sensors[-1].temp",
            "wind_speed": 'wind["speed.avg"]',
            "raining": "$.rain",
            "missing": "sensors[5].temp",
        },
        units={"temperature": "°C"},
    )
    assert {e.metric: e.value for e in events} == {
        "temperature": 18.5,
        "humidity": 71.0,
        "temperature_2": 17.9,
        "wind_speed": 3.4,
        "raining": 0.0,
    }
    assert {e.device for e in events} == {"roof-station"}
    assert next(e.unit for e in events if e.metric == "temperature") == "°C"


def test_generic_root_path_reads_a_bare_json_number() -> None:
    [event] = parse("generic", "x/+", "x/y", b"42", fields={"level": "$"}, device="tank")
    assert (event.device, event.metric, event.value) == ("tank", "level", 42.0)


def test_generic_path_to_text_is_a_wrong_type_field() -> None:
    with pytest.raises(PayloadError) as err:
        parse("generic", "weather/+", "weather/x", WEATHER, fields={"t": "station"})
    assert err.value.reason == "wrong_type_fields"
    assert err.value.detail.startswith("t: ")


def test_generic_path_to_null_is_a_wrong_type_field() -> None:
    with pytest.raises(PayloadError) as err:
        parse("generic", "weather/+", "weather/x", WEATHER, fields={"gust": "wind.gust"})
    assert (err.value.reason, err.value.detail) == ("wrong_type_fields", "gust: null, not a number")


def test_generic_without_any_configured_path_present_has_no_usable_fields() -> None:
    with pytest.raises(PayloadError) as err:
        parse("generic", "weather/+", "weather/x", b'{"other":1}', fields={"t": "sensors[0].temp"})
    assert err.value.reason == "no_usable_fields"


def test_generic_without_fields_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs fields"):
        build_source("weather/+", "generic")


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("a", ("a",)),
        ("$", ()),
        ("$.a.b", ("a", "b")),
        ("sensors[0].temp", ("sensors", 0, "temp")),
        ("[1][-1]", (1, -1)),
        ("a['x.y']", ("a", "x.y")),
        ('a["]"].b', ("a", "]", "b")),
    ],
)
def test_path_syntax(text: str, steps: tuple[object, ...]) -> None:
    assert compile_path(text) == steps


@pytest.mark.parametrize("text", ["", "a..b", "a.", "a[x]", "a[0", "$a", "a['x]", "a]"])
def test_bad_paths_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        compile_path(text)


def test_resolve_never_raises_on_a_mismatched_document() -> None:
    steps = compile_path("a[0].b")
    assert resolve({"a": {"0": 1}}, steps) is MISSING
    assert resolve({"a": [1]}, steps) is MISSING
    assert resolve([], steps) is MISSING
    assert resolve({"a": [{"b": 2}]}, steps) == 2
