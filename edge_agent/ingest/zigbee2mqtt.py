"""zigbee2mqtt: ``<base>/<friendly name>`` JSON state and ``.../availability``.

Friendly names may contain ``/`` (``living room/sensor``), so the device is everything
between the subscription prefix and the end of the topic, less a known sub-topic.

Fields of a state object: numbers, booleans and ``ON``/``OFF`` are readings;
``last_seen`` (ISO 8601 or epoch ms) is the readings' own time. A known reading field
(:data:`READINGS`, or one with a configured unit or range) holding anything else, and a
number written as a string in any field, is dropped and named in a
``wrong_type_fields`` dead letter. Other text, null and nested fields (``action``,
``update``, ``color``...) are descriptive and skipped.
"""

from __future__ import annotations

from typing import Any

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest.fields import clip, field_problem
from edge_agent.ingest.payload import Payload, availability_value, json_number
from edge_agent.ingest.source import Parsed, Source, topic_rest
from edge_agent.ingest.timing import payload_time

# zigbee2mqtt publishes bare numbers; these are the units its converters document.
UNITS: dict[str, str] = {
    "temperature": "°C",
    "device_temperature": "°C",
    "local_temperature": "°C",
    "humidity": "%",
    "soil_moisture": "%",
    "pressure": "hPa",
    "illuminance": "lx",
    "illuminance_lux": "lx",
    "co2": "ppm",
    "voc": "ppb",
    "formaldehyd": "mg/m³",
    "pm25": "µg/m³",
    "battery": "%",
    "voltage": "mV",
    "power": "W",
    "current": "A",
    "energy": "kWh",
    "linkquality": "lqi",
}

READINGS: frozenset[str] = frozenset(UNITS) | frozenset(
    {
        "occupancy",
        "presence",
        "motion",
        "contact",
        "water_leak",
        "smoke",
        "gas",
        "carbon_monoxide",
        "tamper",
        "vibration",
        "battery_low",
        "pm10",
        "pm1",
        "aqi",
        "uv",
        "brightness",
        "position",
    }
)
"""Fields that are readings whenever present: any other type there is a wrong type."""

_TIME = "last_seen"
_AVAILABILITY = "/availability"
# Requests to the bridge, not state: '<name>/set', '<name>/get', '<name>/set/<attr>'.
_REQUEST_SUFFIXES = ("/set", "/get")


def parse(topic: str, payload: Payload, source: Source, now: float) -> Parsed:
    """Events from one zigbee2mqtt message; bridge and request topics are ignored."""
    name = topic_rest(topic, source.prefix)
    if name == "bridge" or name.startswith("bridge/"):
        return Parsed.ignore("not_readings")
    if name.endswith(_AVAILABILITY):
        device = name[: -len(_AVAILABILITY)]
        return Parsed([source.event(device, "available", _availability(payload), topic, now)])
    if name.endswith(_REQUEST_SUFFIXES) or "/set/" in name or "/get/" in name:
        return Parsed.ignore("not_readings")
    if not name:
        raise PayloadError("unknown_shape", "topic has no device name after the prefix")
    doc = payload.json()
    if not isinstance(doc, dict):
        raise PayloadError("unknown_shape", f"expected a JSON object, got {type(doc).__name__}")
    when = now
    if _TIME in doc:
        when = payload_time(doc[_TIME]) or now
    events: list[SensorEvent] = []
    rejected: list[str] = []
    opts = source.options
    for key, value in doc.items():
        if key == _TIME:
            continue
        number = json_number(value)
        if number is not None:
            events.append(source.event(name, key, number, topic, when, default_unit=UNITS.get(key)))
            continue
        known = key in READINGS or key in opts.units or key in opts.ranges
        problem = field_problem(value, known)
        if problem:
            rejected.append(f"{clip(key)}: {problem}")
    if not events and not rejected:
        raise PayloadError("no_usable_fields", "no numeric or boolean field in the object")
    return Parsed(events, tuple(rejected))


def _availability(payload: Payload) -> float:
    """``online``/``offline`` (legacy_availability_payload) or ``{"state": "online"}``."""
    text = payload.text()
    if not text.lstrip().startswith("{"):
        return availability_value(text)
    doc: Any = payload.json()
    state = doc.get("state")
    if not isinstance(state, str):
        raise PayloadError("unknown_shape", "availability object has no 'state' string")
    return availability_value(state)
