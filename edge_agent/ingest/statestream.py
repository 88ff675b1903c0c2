"""Home Assistant ``mqtt_statestream``: ``<base>/<domain>/<object_id>/<state|attribute>``.

The ``state`` topic carries the state as plain text (``21.5``, ``on``); attribute topics
carry JSON-encoded values. The device is the entity id, ``<domain>.<object_id>``; the
state's metric is ``state`` and an attribute's metric is the attribute's name.

Documented ignores: the placeholder states ``unavailable``/``unknown``/``none``/empty
(``no_reading``), and the timestamps and descriptive attributes in :data:`METADATA`
(``metadata``), whatever their value. Any other attribute that is null, text, a list or
an object is dead-lettered as ``wrong_type``: attribute topics of lights and climates
(``brightness: null`` while off, ``hvac_modes``) do that too, so subscribe to
``<base>/+/+/state`` alone if only states matter.
"""

from __future__ import annotations

from edge_agent.errors import PayloadError
from edge_agent.ingest.fields import field_problem
from edge_agent.ingest.payload import Payload, json_number, text_number
from edge_agent.ingest.source import Parsed, Source

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
METADATA: frozenset[str] = frozenset(
    {
        # Published with publish_timestamps; ISO strings, not readings.
        "last_changed",
        "last_updated",
        "last_reported",
        # Descriptive attributes every entity may carry.
        "friendly_name",
        "unit_of_measurement",
        "device_class",
        "state_class",
        "icon",
        "entity_picture",
        "attribution",
        "supported_features",
        "supported_color_modes",
        "assumed_state",
        "restored",
        "editable",
        "id",
        "options",
        "entity_id",
    }
)
"""Attributes ignored as ``metadata`` whatever their value."""


def parse(topic: str, payload: Payload, source: Source, now: float) -> Parsed:
    """Events from one statestream message; metadata and placeholders are ignored."""
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
            return Parsed.ignore("no_reading")
        value = _STATE_WORDS.get(lowered)
        if value is None:
            value = text_number(word)
        return Parsed([source.event(device, "state", value, topic, now)])
    if leaf == "friendly_name" and source.options.on_name is not None:
        doc = payload.json()
        if isinstance(doc, str):
            source.options.on_name(device, doc)
        return Parsed.ignore("metadata")
    if leaf in METADATA:
        return Parsed.ignore("metadata")
    doc = payload.json()
    number = json_number(doc)
    if number is None:
        problem = field_problem(doc, known=True) or "not a number"
        raise PayloadError("wrong_type", f"attribute {leaf}: {problem}")
    return Parsed([source.event(device, leaf, number, topic, now)])
