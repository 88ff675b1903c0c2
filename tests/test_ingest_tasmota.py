"""Tasmota adapter contract: tele SENSOR/STATE/LWT and stat POWER, in Tasmota's shapes."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest import Payload, SourceOptions, build_source
from edge_agent.ingest.tasmota import snake

NOW = 1_700_000_000.0


def parse(topic: str, payload: bytes, flt: str = "+/+/+", **opts: Any) -> list[SensorEvent]:
    source = build_source(flt, "tasmota", None, SourceOptions(**opts))
    return source.parse(topic, Payload(payload), NOW)


def table(events: list[SensorEvent]) -> dict[str, tuple[float, str | None]]:
    return {e.metric: (e.value, e.unit) for e in events}


def test_am2301_sensor_uses_the_sensor_field_naming_rule_and_temp_unit() -> None:
    payload = (
        b'{"Time":"2024-05-01T12:00:00","AM2301":{"Temperature":21.3,"Humidity":40.1,'
        b'"DewPoint":7.3},"TempUnit":"C"}'
    )
    events = parse("tele/tasmota_4F2A1C/SENSOR", payload)
    assert {e.device for e in events} == {"tasmota_4F2A1C"}
    assert table(events) == {
        "am2301_temperature": (21.3, "°C"),
        "am2301_humidity": (40.1, "%"),
        "am2301_dew_point": (7.3, "°C"),
    }


def test_bme280_sensor_takes_pressure_unit_and_fahrenheit_from_the_payload() -> None:
    payload = (
        b'{"Time":"2024-05-01T12:00:00","BME280":{"Temperature":72.5,"Humidity":45.2,'
        b'"DewPoint":50.1,"Pressure":29.92,"SeaPressure":30.05},"PressureUnit":"inHg",'
        b'"TempUnit":"F"}'
    )
    assert table(parse("tele/weather/SENSOR", payload)) == {
        "bme280_temperature": (72.5, "°F"),
        "bme280_humidity": (45.2, "%"),
        "bme280_dew_point": (50.1, "°F"),
        "bme280_pressure": (29.92, "inHg"),
        "bme280_sea_pressure": (30.05, "inHg"),
    }


def test_several_ds18b20_probes_get_one_metric_each_and_ids_are_ignored() -> None:
    payload = (
        b'{"Time":"2024-05-01T12:00:00","DS18B20-1":{"Id":"01144A0CB2AA","Temperature":22.4},'
        b'"DS18B20-2":{"Id":"0316A1C3B0FF","Temperature":-3.1},"TempUnit":"C"}'
    )
    assert table(parse("tele/boiler/SENSOR", payload)) == {
        "ds18b20_1_temperature": (22.4, "°C"),
        "ds18b20_2_temperature": (-3.1, "°C"),
    }


def test_energy_monitor_fields_with_units() -> None:
    payload = (
        b'{"Time":"2024-05-01T12:00:00","ENERGY":{"TotalStartTime":"2023-01-01T00:00:00",'
        b'"Total":123.456,"Yesterday":1.234,"Today":0.567,"Period":5,"Power":48,'
        b'"ApparentPower":60,"ReactivePower":36,"Factor":0.80,"Voltage":231,"Current":0.260}}'
    )
    assert table(parse("tele/washer_plug/SENSOR", payload)) == {
        "energy_total": (123.456, "kWh"),
        "energy_yesterday": (1.234, "kWh"),
        "energy_today": (0.567, "kWh"),
        "energy_period": (5.0, "Wh"),
        "energy_power": (48.0, "W"),
        "energy_apparent_power": (60.0, "VA"),
        "energy_reactive_power": (36.0, "var"),
        "energy_factor": (0.8, None),
        "energy_voltage": (231.0, "V"),
        "energy_current": (0.26, "A"),
    }


def test_multi_phase_energy_arrays_get_a_phase_suffix() -> None:
    payload = b'{"Time":"2024-05-01T12:00:00","ENERGY":{"Voltage":[230,231,229],"Power":[10,0,5]}}'
    events = table(parse("tele/meter/SENSOR", payload))
    assert events["energy_voltage_3"] == (229.0, "V")
    assert events["energy_power_1"] == (10.0, "W")


def test_top_level_switch_and_config_unit_for_unknown_fields() -> None:
    payload = b'{"Time":"2024-05-01T12:00:00","Switch1":"ON","ANALOG":{"A0":512}}'
    events = table(parse("tele/door/SENSOR", payload, units={"analog_a0": "raw"}))
    assert events == {"switch1": (1.0, None), "analog_a0": (512.0, "raw")}


def test_state_reports_relays_dimmer_uptime_and_wifi() -> None:
    payload = (
        b'{"Time":"2024-05-01T12:00:00","Uptime":"0T01:02:03","UptimeSec":3723,"Heap":25,'
        b'"SleepMode":"Dynamic","Sleep":50,"LoadAvg":19,"MqttCount":1,"POWER1":"ON",'
        b'"POWER2":"OFF","Dimmer":40,"Wifi":{"AP":1,"SSId":"home","BSSId":"AA:BB:CC:DD:EE:FF",'
        b'"Channel":6,"Mode":"11n","RSSI":78,"Signal":-61,"LinkCount":1,"Downtime":"0T00:00:04"}}'
    )
    assert table(parse("tele/desk_lamp/STATE", payload)) == {
        "power1": (1.0, None),
        "power2": (0.0, None),
        "dimmer": (40.0, "%"),
        "uptime": (3723.0, "s"),
        "wifi_rssi": (78.0, "%"),
        "wifi_signal": (-61.0, "dBm"),
    }


@pytest.mark.parametrize(
    ("topic", "payload", "metric", "value"),
    [
        ("stat/desk_lamp/POWER", b"ON", "power", 1.0),
        ("stat/desk_lamp/POWER2", b"OFF", "power2", 0.0),
        ("tele/desk_lamp/LWT", b"Online", "available", 1.0),
        ("tele/desk_lamp/LWT", b"Offline", "available", 0.0),
    ],
)
def test_plain_power_and_last_will(topic: str, payload: bytes, metric: str, value: float) -> None:
    [event] = parse(topic, payload)
    assert (event.device, event.metric, event.value) == ("desk_lamp", metric, value)


def test_result_reply_with_power_is_a_reading_and_other_replies_are_not() -> None:
    [event] = parse("stat/desk_lamp/RESULT", b'{"POWER":"ON"}')
    assert (event.metric, event.value) == ("power", 1.0)
    assert parse("stat/desk_lamp/RESULT", b'{"TelePeriod":300}') == []


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("cmnd/desk_lamp/POWER", b"TOGGLE"),
        ("tele/desk_lamp/INFO1", b'{"Info1":{"Module":"Sonoff Basic","Version":"14.0.0"}}'),
        ("stat/desk_lamp/STATUS", b'{"Status":{"Module":1}}'),
    ],
)
def test_commands_and_info_topics_are_skipped(topic: str, payload: bytes) -> None:
    assert parse(topic, payload) == []


def test_custom_full_topic_layouts() -> None:
    # FullTopic 'home/%prefix%/%topic%/' and '%topic%/%prefix%/'.
    [a] = parse("home/tele/garden/LWT", b"Online", flt="home/#")
    [b] = parse("garden/tele/LWT", b"Online", flt="garden/#")
    assert a.device == b.device == "garden"


def test_power_that_is_not_on_or_off_is_wrong_type() -> None:
    with pytest.raises(PayloadError) as err:
        parse("stat/desk_lamp/POWER", b"50")
    assert err.value.reason == "wrong_type"


def test_topic_without_a_tasmota_prefix_is_unknown_shape() -> None:
    with pytest.raises(PayloadError) as err:
        parse("sensors/desk_lamp/SENSOR", b"{}")
    assert err.value.reason == "unknown_shape"


def test_sensor_with_only_text_has_no_usable_fields() -> None:
    with pytest.raises(PayloadError) as err:
        parse("tele/desk_lamp/SENSOR", b'{"Time":"2024-05-01T12:00:00","TempUnit":"C"}')
    assert err.value.reason == "no_usable_fields"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("AM2301", "am2301"),
        ("ApparentPower", "apparent_power"),
        ("DS18B20-1", "ds18b20_1"),
        ("SeaPressure", "sea_pressure"),
        ("PM2.5", "pm2_5"),
        ("CO2", "co2"),
        ("eCO2", "e_co2"),
    ],
)
def test_snake_case_naming_rule(name: str, expected: str) -> None:
    assert snake(name) == expected
