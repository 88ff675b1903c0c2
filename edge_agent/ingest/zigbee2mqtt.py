"""zigbee2mqtt: ``<base>/<friendly name>`` JSON state and ``.../availability``.

Friendly names may contain ``/`` (``living room/sensor``), so the device is everything
between the subscription prefix and the end of the topic, less a known sub-topic.
"""

from __future__ import annotations

from typing import Any

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest.payload import Payload, availability_value, json_number
from edge_agent.ingest.source import Source, topic_rest

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

_AVAILABILITY = "/availability"
# Requests to the bridge, not state: '<name>/set', '<name>/get', '<name>/set/<attr>'.
_REQUEST_SUFFIXES = ("/set", "/get")


def parse(topic: str, payload: Payload, source: Source, now: float) -> list[SensorEvent]:
    """Events from one zigbee2mqtt message; bridge and request topics give none."""
    name = topic_rest(topic, source.prefix)
    if name == "bridge" or name.startswith("bridge/"):
        return []
    if name.endswith(_AVAILABILITY):
        device = name[: -len(_AVAILABILITY)]
        return [source.event(device, "available", _availability(payload), topic, now)]
    if name.endswith(_REQUEST_SUFFIXES) or "/set/" in name or "/get/" in name:
        return []
    if not name:
        raise PayloadError("unknown_shape", "topic has no device name after the prefix")
    doc = payload.json()
    if not isinstance(doc, dict):
        raise PayloadError("unknown_shape", f"expected a JSON object, got {type(doc).__name__}")
    events = []
    for key, value in doc.items():
        # Text fields (action, last_seen, update...) and nested objects are not readings.
        number = json_number(value)
        if number is not None:
            events.append(source.event(name, key, number, topic, now, default_unit=UNITS.get(key)))
    if not events:
        raise PayloadError("no_usable_fields", "no numeric or boolean field in the object")
    return events


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
