"""Payload adapters: pure functions from (topic, payload) to typed sensor events.

Every adapter has the :data:`Adapter` signature and decodes the payload itself through
:class:`Payload`, so size, UTF-8 and NaN checks are the same everywhere. It raises
:class:`~edge_agent.errors.PayloadError` with a stable reason code for input it cannot
use (``too_large``, ``invalid_utf8``, ``not_json``, ``not_finite``, ``wrong_type``,
``out_of_range``, ``unknown_shape``, ``no_usable_fields``) and returns ``[]`` for topics
it deliberately ignores.
"""

from __future__ import annotations

from types import MappingProxyType

from edge_agent.errors import ConfigError
from edge_agent.ingest import esphome, generic, plain, statestream, tasmota, zigbee2mqtt
from edge_agent.ingest.paths import compile_path
from edge_agent.ingest.payload import Payload
from edge_agent.ingest.source import Adapter, Source, SourceOptions

__all__ = [
    "ADAPTERS",
    "Adapter",
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
        on_name=opts.on_name,
    )
    return Source(parse, topic_prefix(topic_filter), area, frozen, paths)


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
