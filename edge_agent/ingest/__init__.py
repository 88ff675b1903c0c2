"""Payload adapters: pure functions from (topic, payload) to typed sensor events.

Every adapter has the :data:`Adapter` signature and decodes the payload itself through
:class:`Payload`, so size, UTF-8, depth, number, Unicode and NaN checks are the same
everywhere. Each message ends in exactly one outcome (see ``docs/intake.md``):

- events (a :class:`Parsed` with events); fields of the wrong type inside an object are
  dropped and listed in ``Parsed.rejected``, which the agent publishes as one
  ``wrong_type_fields`` dead letter while the valid fields are ingested;
- a :class:`~edge_agent.errors.PayloadError` with a stable reason code: ``too_large``,
  ``invalid_utf8``, ``not_json``, ``too_deep``, ``number_too_long``, ``out_of_range``,
  ``non_ascii_digits``, ``invalid_unicode``, ``not_finite``, ``wrong_type``,
  ``wrong_type_fields``, ``bad_name``, ``unknown_shape``, ``no_usable_fields``;
- a documented ignore, ``Parsed.ignored`` (one of :data:`IGNORE_REASONS`): an empty
  payload, a topic that carries no readings, Home Assistant's ``unavailable``
  placeholders, statestream metadata attributes (``friendly_name``, ``icon``...).

Statestream attributes that are null, text, lists or objects are dead-lettered as
``wrong_type`` unless their name is a known metadata attribute (``statestream.METADATA``).
"""

from __future__ import annotations

from types import MappingProxyType

from edge_agent.errors import ConfigError
from edge_agent.ingest import esphome, generic, plain, statestream, tasmota, zigbee2mqtt
from edge_agent.ingest.paths import compile_path
from edge_agent.ingest.payload import Payload
from edge_agent.ingest.source import (
    IGNORE_REASONS,
    Adapter,
    IgnoreReason,
    Parsed,
    Source,
    SourceOptions,
)

__all__ = [
    "ADAPTERS",
    "IGNORE_REASONS",
    "Adapter",
    "IgnoreReason",
    "Parsed",
    "Payload",
    "Source",
    "SourceOptions",
    "build_source",
    "compile_path",
    "topic_prefix",
]

ADAPTERS: dict[str, Adapter] = {
    "zigbee2mqtt": zigbee2mqtt.parse,
    "statestream": statestream.parse,
    "tasmota": tasmota.parse,
    "esphome": esphome.parse,
    "plain": plain.parse,
    "generic": generic.parse,
}
"""Adapter name in config -> adapter; the settings' ``adapter`` Literal lists the same names."""


def build_source(
    topic_filter: str,
    adapter: str,
    area: str | None = None,
    options: SourceOptions | None = None,
) -> Source:
    """Resolve one subscription into a :class:`Source`, compiling generic paths once.

    Raises :class:`ConfigError` for an unknown adapter, a bad path, or a generic
    subscription without fields (settings validation catches these first).
    """
    opts = options or SourceOptions()
    try:
        parse = ADAPTERS[adapter]
    except KeyError:
        raise ConfigError(
            f"unknown adapter {adapter!r}; choose one of {', '.join(sorted(ADAPTERS))}"
        ) from None
    if adapter == "generic" and not opts.fields:
        raise ConfigError(f"subscription {topic_filter!r}: the generic adapter needs fields")
    paths = tuple((metric, compile_path(path)) for metric, path in opts.fields.items())
    # Read-only copies: the source is shared by every message and must not drift.
    frozen = SourceOptions(
        units=MappingProxyType(dict(opts.units)),
        ranges=MappingProxyType(dict(opts.ranges)),
        device_areas=MappingProxyType(dict(opts.device_areas)),
        device=opts.device,
        metric=opts.metric,
        fields=MappingProxyType(dict(opts.fields)),
        time_path=opts.time_path,
        on_name=opts.on_name,
    )
    time_steps = None if opts.time_path is None else compile_path(opts.time_path)
    return Source(parse, topic_prefix(topic_filter), area, frozen, paths, time_steps)


def topic_prefix(topic_filter: str) -> str:
    """The literal levels of a filter before its first wildcard, e.g. ``zigbee2mqtt/``.

    A filter without wildcards names one topic; its prefix is the parent level, so
    that topic's last level is what adapters see as the name.
    """
    parts = topic_filter.split("/")
    literal = []
    for part in parts:
        if part in ("+", "#"):
            break
        literal.append(part)
    else:
        literal.pop()
    return "/".join(literal) + "/" if literal else ""
