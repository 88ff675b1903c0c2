"""Plain text payloads on any topic: a number, ``ON``/``OFF`` or ``true``/``false``.

Device and metric come from config, else from the topic after the subscription's
prefix: ``home/+/temperature`` gives device ``kitchen``, metric ``temperature`` for
``home/kitchen/temperature``; a one-level remainder is the device and the metric is
``value``.
"""

from __future__ import annotations

from edge_agent.ingest.payload import Payload, text_number
from edge_agent.ingest.source import Parsed, Source, topic_rest


def parse(topic: str, payload: Payload, source: Source, now: float) -> Parsed:
    """One event from one plain reading."""
    value = text_number(payload.text())
    opts = source.options
    head, _, tail = topic_rest(topic, source.prefix).rpartition("/")
    device = opts.device or head or tail
    metric = opts.metric or (tail if head else "value")
    return Parsed([source.event(device, metric, value, topic, now)])
