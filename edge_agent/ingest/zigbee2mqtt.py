"""zigbee2mqtt device state: ``zigbee2mqtt/<friendly name>`` -> ``{"temperature": 21.3}``."""

from __future__ import annotations

from typing import Any

from edge_agent.domain import SensorEvent, is_finite_number
from edge_agent.errors import PayloadError

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

# Sub-topics that are requests or metadata, not state (friendly names may contain '/').
_IGNORED_SUFFIXES = ("/set", "/get", "/availability")


def parse(
    topic: str, doc: Any, prefix: str, area: str | None, now: float
) -> list[SensorEvent]:
    """Turn one zigbee2mqtt state message into events, one per numeric or boolean field."""
    name = topic.removeprefix(prefix)
    if name.startswith("bridge/") or name == "bridge" or name.endswith(_IGNORED_SUFFIXES):
        return []
    if not name:
        raise PayloadError("unknown_shape", "topic has no device name after the prefix")
    if not isinstance(doc, dict):
        raise PayloadError("unknown_shape", f"expected a JSON object, got {type(doc).__name__}")
    events = []
    for key, value in doc.items():
        number = _as_number(value)
        if number is None:
            continue
        events.append(
            SensorEvent(
                device=name,
                metric=key,
                value=number,
                ts=now,
                topic=topic,
                unit=UNITS.get(key),
                area=area,
            )
        )
    if not events:
        raise PayloadError("no_usable_fields", "no numeric or boolean field in the object")
    return events


def _as_number(value: Any) -> float | None:
    """Numbers as floats, booleans and ON/OFF as 1.0/0.0; anything else is not a reading."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if is_finite_number(value):
        return float(value)
    if isinstance(value, str) and value.upper() in ("ON", "OFF"):
        return 1.0 if value.upper() == "ON" else 0.0
    return None
