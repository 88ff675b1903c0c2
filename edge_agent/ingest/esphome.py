"""ESPHome in MQTT mode: ``<prefix>/<component>/<object_id>/state`` and ``<prefix>/status``.

The device is the node's topic prefix less the subscription's literal prefix (so both
``livingroom/#`` and ``esphome/+/sensor/+/state`` name the node ``livingroom``); the
metric is the object id. ESPHome sends units only in discovery, so they come from config.
"""

from __future__ import annotations

from edge_agent.errors import PayloadError
from edge_agent.ingest.payload import Payload, availability_value, switch_value, text_number
from edge_agent.ingest.source import Parsed, Source

# Components whose state topic is a number, or ON/OFF; the rest (text_sensor, light's
# JSON schema, climate...) are not readings this adapter understands.
_NUMERIC = frozenset({"sensor", "number"})
_SWITCHES = frozenset({"binary_sensor", "switch"})


def parse(topic: str, payload: Payload, source: Source, now: float) -> Parsed:
    """Events from one ESPHome message; debug, command and other topics are ignored."""
    node_path, _, leaf = topic.rpartition("/")
    if leaf == "status":
        node = _node(node_path, source.prefix)
        value = availability_value(payload.text())
        return Parsed([source.event(node, "available", value, topic, now)])
    if leaf != "state":
        return _NOT_READINGS
    parts = node_path.rsplit("/", 2)
    if len(parts) < 3 or not parts[0]:
        raise PayloadError("unknown_shape", "expected <prefix>/<component>/<object_id>/state")
    node_path, component, object_id = parts
    if component in _NUMERIC:
        # ESPHome publishes 'nan' when a sensor read fails; text_number calls it not_finite.
        value = text_number(payload.text())
    elif component in _SWITCHES:
        value = switch_value(payload.text())
    else:
        return _NOT_READINGS
    return Parsed([source.event(_node(node_path, source.prefix), object_id, value, topic, now)])


_NOT_READINGS = Parsed.ignore("not_readings")


def _node(node_path: str, prefix: str) -> str:
    if prefix and node_path.startswith(prefix):
        return node_path[len(prefix) :] or node_path
    return node_path
