"""Tasmota: ``tele/<t>/SENSOR``, ``tele/<t>/STATE``, ``tele/<t>/LWT`` and ``stat/<t>/POWER<n>``.

Naming rule for SENSOR: ``<sensor>_<field>`` in snake_case, e.g. ``{"AM2301":
{"Temperature": 21.3}}`` -> ``am2301_temperature``, ``DS18B20-1`` -> ``ds18b20_1_...``,
``ENERGY.ApparentPower`` -> ``energy_apparent_power``; a top-level value keeps its own
name (``Switch1`` -> ``switch1``), and array items get a 1-based suffix
(``energy_voltage_1`` for phase 1). Units come from ``TempUnit``/``PressureUnit``/
``SpeedUnit`` in the payload, else from Tasmota's documented defaults below.

``Time`` (local time without an offset, as Tasmota sends it) is the readings' own time.
A known reading field (one with a unit below, a temperature or pressure, ``POWER<n>``,
``Dimmer``, ``Wifi.RSSI``...) of the wrong type, and a number written as a string, is
dropped and named in one ``wrong_type_fields`` dead letter; other text (``Id``,
``TotalStartTime``) is descriptive and skipped.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest.fields import clip, field_problem
from edge_agent.ingest.payload import Payload, availability_value, json_number, switch_value
from edge_agent.ingest.source import Parsed, Source
from edge_agent.ingest.timing import payload_time

_PREFIXES = frozenset({"tele", "stat", "cmnd"})
_UNIT_FIELDS = frozenset({"TempUnit", "PressureUnit", "SpeedUnit", "Time"})

# Fixed units of Tasmota's JSON fields; temperature, pressure and speed are in the payload.
_UNITS: dict[str, str] = {
    "Humidity": "%",
    "Illuminance": "lx",
    "CO2": "ppm",
    "eCO2": "ppm",
    "TVOC": "ppb",
    "Distance": "cm",
    "Total": "kWh",
    "Yesterday": "kWh",
    "Today": "kWh",
    "Period": "Wh",
    "Power": "W",
    "ApparentPower": "VA",
    "ReactivePower": "var",
    "Voltage": "V",
    "Current": "A",
    "Frequency": "Hz",
}
_TEMPERATURE_FIELDS = frozenset({"Temperature", "DewPoint"})
_PRESSURE_FIELDS = frozenset({"Pressure", "SeaPressure"})


def parse(topic: str, payload: Payload, source: Source, now: float) -> Parsed:
    """Events from one Tasmota message; commands and informational topics are ignored."""
    kind, device, leaf = _split(topic)
    if kind == "tele":
        if leaf == "SENSOR":
            return _sensor(device, topic, payload, source, now)
        if leaf == "STATE":
            parsed = _state(device, topic, payload.json(), source, now)
            if not parsed.events and not parsed.rejected:
                raise PayloadError("no_usable_fields", "STATE has no POWER, Dimmer or Wifi field")
            return parsed
        if leaf == "LWT":
            value = availability_value(payload.text())
            return Parsed([source.event(device, "available", value, topic, now)])
        return _NOT_READINGS  # INFO1..3, UPTIME, MARGINS...: not readings
    if kind == "stat":
        if leaf.startswith("POWER"):
            value = switch_value(payload.text())
            return Parsed([source.event(device, leaf.lower(), value, topic, now)])
        if leaf == "RESULT":
            # Command replies: only those that report a relay or dimmer are readings.
            parsed = _state(device, topic, payload.json(), source, now)
            return parsed if parsed.events or parsed.rejected else _NOT_READINGS
    return _NOT_READINGS


_NOT_READINGS = Parsed.ignore("not_readings")


def _when(doc: dict[str, Any], now: float) -> float:
    """The message's ``Time`` as epoch seconds, else the receive time."""
    return payload_time(doc["Time"]) or now if "Time" in doc else now


def _split(topic: str) -> tuple[str, str, str]:
    """(prefix, device, leaf), FullTopic ``[path/]%prefix%/%topic%/`` or ``%topic%/%prefix%/``."""
    parts = topic.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in _PREFIXES:
            device = "/".join(parts[i + 1 : -1]) or "/".join(parts[:i])
            if device:
                return part, device, parts[-1]
            break
    raise PayloadError("unknown_shape", "expected tele|stat|cmnd/<topic>/<leaf> in the topic")


def _sensor(device: str, topic: str, payload: Payload, source: Source, now: float) -> Parsed:
    doc = payload.json()
    if not isinstance(doc, dict):
        raise PayloadError("unknown_shape", f"expected a JSON object, got {type(doc).__name__}")
    now = _when(doc, now)
    temp = doc.get("TempUnit")
    pressure = doc.get("PressureUnit")
    temp_unit = f"°{temp}" if isinstance(temp, str) and temp else None
    pressure_unit = pressure if isinstance(pressure, str) and pressure else None
    events: list[SensorEvent] = []
    rejected: list[str] = []
    for key, value in doc.items():
        if key in _UNIT_FIELDS:
            continue
        if isinstance(value, dict):
            for name, item in value.items():
                metric = _metric(key, name)
                unit, default = _unit(name, temp_unit, pressure_unit)
                problem = _add(events, device, metric, item, unit, default, topic, source, now)
                if problem:
                    rejected.append(f"{clip(key)}.{clip(name)}: {problem}")
        else:
            unit, default = _unit(key, temp_unit, pressure_unit)
            problem = _add(events, device, snake(key), value, unit, default, topic, source, now)
            if problem:
                rejected.append(f"{clip(key)}: {problem}")
    if not events and not rejected:
        raise PayloadError("no_usable_fields", "no numeric or ON/OFF field in SENSOR")
    return Parsed(events, tuple(rejected))


_READINGS = frozenset(_UNITS) | _TEMPERATURE_FIELDS | _PRESSURE_FIELDS
"""Fields that are readings whenever present: any other type there is a wrong type."""


def _unit(name: str, temp: str | None, pressure: str | None) -> tuple[str | None, str | None]:
    """(unit from the payload, Tasmota's default unit) of one field."""
    if name in _TEMPERATURE_FIELDS:
        return temp, None
    if name in _PRESSURE_FIELDS:
        return pressure, "hPa"
    return None, _UNITS.get(name)


def _add(
    events: list[SensorEvent],
    device: str,
    metric: str,
    value: Any,
    unit: str | None,
    default: str | None,
    topic: str,
    source: Source,
    now: float,
) -> str | None:
    """Append the reading(s) of one field; text (Id, TotalStartTime) is not a reading.

    Returns why the field (or an item of it) has the wrong type, if it does.
    """
    opts = source.options
    known = metric in opts.units or metric in opts.ranges or _known(metric)
    if isinstance(value, list):
        # Multi-phase energy meters report one value per phase.
        problem = None
        for i, item in enumerate(value, 1):
            number = json_number(item)
            if number is not None:
                events.append(
                    source.event(device, f"{metric}_{i}", number, topic, now, unit, default)
                )
            else:
                problem = problem or field_problem(item, known)
        return problem
    number = json_number(value)
    if number is not None:
        events.append(source.event(device, metric, number, topic, now, unit, default))
        return None
    return field_problem(value, known)


def _known(metric: str) -> bool:
    """A metric whose last part is a known reading field (``am2301_temperature``)."""
    return metric.rsplit("_", 1)[-1] in _KNOWN_TAILS or metric in _KNOWN_METRICS


def _state(device: str, topic: str, doc: Any, source: Source, now: float) -> Parsed:
    """Relays, dimmer, uptime and Wi-Fi quality from STATE (or a RESULT reply)."""
    if not isinstance(doc, dict):
        raise PayloadError("unknown_shape", f"expected a JSON object, got {type(doc).__name__}")
    now = _when(doc, now)
    events: list[SensorEvent] = []
    rejected: list[str] = []

    def number(key: str, value: Any, metric: str, unit: str) -> None:
        found = json_number(value)
        if found is not None:
            events.append(source.event(device, metric, found, topic, now, unit))
        else:
            rejected.append(f"{clip(key)}: {field_problem(value, known=True)}")

    for key, value in doc.items():
        if key.startswith("POWER"):
            if isinstance(value, str):
                events.append(source.event(device, key.lower(), switch_value(value), topic, now))
            else:
                rejected.append(f"{clip(key)}: {json.dumps(value)[:20]}, not ON or OFF")
        elif key == "Dimmer":
            number(key, value, "dimmer", "%")
        elif key == "UptimeSec":
            number(key, value, "uptime", "s")
        elif key == "Wifi":
            if not isinstance(value, dict):
                rejected.append(f"Wifi: {field_problem(value, known=True)}")
                continue
            for name, metric, unit in (
                ("RSSI", "wifi_rssi", "%"),
                ("Signal", "wifi_signal", "dBm"),
            ):
                if name in value:
                    number(f"Wifi.{name}", value[name], metric, unit)
    return Parsed(events, tuple(rejected))


@lru_cache(maxsize=4096)
def _metric(sensor: str, name: str) -> str:
    """``_metric("ENERGY", "ApparentPower")`` -> ``energy_apparent_power`` (cached)."""
    return f"{snake(sensor)}_{snake(name)}"


@lru_cache(maxsize=4096)
def snake(name: str) -> str:
    """``ApparentPower`` -> ``apparent_power``, ``DS18B20-1`` -> ``ds18b20_1``.

    An underscore goes before an upper-case letter that follows a lower-case one, so
    acronyms and model numbers (``AM2301``, ``CO2``, ``RSSI``) stay in one piece.
    """
    out: list[str] = []
    prev = ""
    for ch in name:
        if ch.isalnum():
            if ch.isupper() and prev.islower():
                out.append("_")
            out.append(ch.lower())
        elif out and out[-1] != "_":
            out.append("_")
        prev = ch
    return "".join(out).strip("_")


_KNOWN_METRICS = frozenset(snake(name) for name in _READINGS)
_KNOWN_TAILS = frozenset(m for m in _KNOWN_METRICS if "_" not in m)
