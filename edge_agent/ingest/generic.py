"""Generic JSON: each configured metric is read from the document by a path expression.

The device comes from config, else it is the topic after the subscription's prefix.
A path that is absent is skipped (devices send partial updates); a path that holds
something other than a number, boolean or ``ON``/``OFF`` is dropped and named in one
``wrong_type_fields`` dead letter (the other paths are still read). With ``time_path``,
the value there (ISO 8601 or epoch s/ms) is the readings' own time.
"""

from __future__ import annotations

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest.fields import field_problem
from edge_agent.ingest.paths import MISSING, resolve
from edge_agent.ingest.payload import Payload, json_number
from edge_agent.ingest.source import Parsed, Source, topic_rest
from edge_agent.ingest.timing import payload_time


def parse(topic: str, payload: Payload, source: Source, now: float) -> Parsed:
    """Events for the configured paths present in the document."""
    doc = payload.json()
    device = source.options.device or topic_rest(topic, source.prefix)
    if source.time_steps is not None:
        found = resolve(doc, source.time_steps)
        now = (payload_time(found) or now) if found is not MISSING else now
    events: list[SensorEvent] = []
    rejected: list[str] = []
    for metric, steps in source.paths:
        found = resolve(doc, steps)
        if found is MISSING:
            continue
        number = json_number(found)
        if number is None:
            rejected.append(f"{metric}: {field_problem(found, known=True)}")
            continue
        events.append(source.event(device, metric, number, topic, now))
    if not events and not rejected:
        raise PayloadError("no_usable_fields", "none of the configured paths is in the document")
    return Parsed(events, tuple(rejected))
