"""Generic JSON: each configured metric is read from the document by a path expression.

The device comes from config, else it is the topic after the subscription's prefix.
A path that is absent is skipped (devices send partial updates); a path that holds
something other than a number, boolean or ``ON``/``OFF`` is ``wrong_type``.
"""

from __future__ import annotations

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest.paths import MISSING, resolve
from edge_agent.ingest.payload import Payload, json_number
from edge_agent.ingest.source import Source, topic_rest


def parse(topic: str, payload: Payload, source: Source, now: float) -> list[SensorEvent]:
    """Events for the configured paths present in the document."""
    doc = payload.json()
    device = source.options.device or topic_rest(topic, source.prefix)
    events = []
    for metric, steps in source.paths:
        found = resolve(doc, steps)
        if found is MISSING:
            continue
        number = json_number(found)
        if number is None:
            raise PayloadError(
                "wrong_type", f"{metric} is a {type(found).__name__}, not a number or boolean"
            )
        events.append(source.event(device, metric, number, topic, now))
    if not events:
        raise PayloadError("no_usable_fields", "none of the configured paths is in the document")
    return events
