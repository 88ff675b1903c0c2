"""Home Assistant ``mqtt_statestream``: ``<base>/<domain>/<object_id>/<state|attribute>``.

The ``state`` topic carries the state as plain text (``21.5``, ``on``); attribute topics
carry JSON-encoded values. The device is the entity id, ``<domain>.<object_id>``; the
state's metric is ``state`` and an attribute's metric is the attribute's name.
"""

from __future__ import annotations

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest.payload import Payload, json_number, text_number
from edge_agent.ingest.source import Source

# Home Assistant's placeholders for "no reading": not bad input, just nothing to record.
_NO_READING = frozenset({"unavailable", "unknown", "none", ""})
# Binary-ish states of common domains, as 1.0/0.0 (on/off and numbers are text_number's).
_STATE_WORDS: dict[str, float] = {
    "open": 1.0,
    "closed": 0.0,
    "home": 1.0,
    "not_home": 0.0,
    "locked": 1.0,
    "unlocked": 0.0,
}
# Published with publish_timestamps; ISO strings, not readings.
_TIMESTAMPS = frozenset({"last_changed", "last_updated"})


def parse(topic: str, payload: Payload, source: Source, now: float) -> list[SensorEvent]:
    """Events from one statestream message; text attributes and placeholders give none."""
    # Parsed from the end: object ids never contain '/', and the base topic may.
    parts = topic.rsplit("/", 3)
    if len(parts) < 4:
        raise PayloadError(
            "unknown_shape", "expected <base>/<domain>/<object_id>/<state|attribute>"
        )
    _, domain, object_id, leaf = parts
    device = f"{domain}.{object_id}"
    if leaf == "state":
        word = payload.text().strip()
        lowered = word.lower()
        if lowered in _NO_READING:
            return []
        value = _STATE_WORDS.get(lowered)
        if value is None:
            value = text_number(word)
        return [source.event(device, "state", value, topic, now)]
    if leaf in _TIMESTAMPS:
        return []
    doc = payload.json()
    if leaf == "friendly_name" and isinstance(doc, str) and source.options.on_name is not None:
        source.options.on_name(device, doc)
        return []
    number = json_number(doc)
    if number is None:
        return []  # friendly_name, unit_of_measurement, icon...: metadata, not readings
    return [source.event(device, leaf, number, topic, now)]
