"""A subscription's parse context: its adapter, topic prefix and per-source config."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest.paths import Step
from edge_agent.ingest.payload import Payload

Adapter = Callable[[str, Payload, "Source", float], list[SensorEvent]]
"""``(topic, payload, source, receive time) -> events``.

An adapter decodes the payload itself (``payload.text()`` or ``payload.json()``, which
apply the size, UTF-8 and NaN checks), builds every event through :meth:`Source.event`
(which applies the configured units, areas and ranges), returns ``[]`` for topics it
deliberately ignores, and raises :class:`PayloadError` for input it cannot use.
"""

_EMPTY: Mapping[str, str] = MappingProxyType({})
_NO_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType({})


def _empty() -> Mapping[str, str]:
    return _EMPTY


def _no_ranges() -> Mapping[str, tuple[float, float]]:
    return _NO_RANGES


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Per-subscription parse settings, as plain values (built from settings by the app).

    Keys of ``units`` and ``ranges`` are a metric name, or ``<device>.<metric>`` (a fact
    id) for one device only; the fact id wins.
    """

    units: Mapping[str, str] = field(default_factory=_empty)
    """Unit per metric, used when the payload carries none."""
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=_no_ranges)
    """Inclusive ``(min, max)`` per metric; a reading outside is ``out_of_range``."""
    device_areas: Mapping[str, str] = field(default_factory=_empty)
    """Area per device name; wins over the subscription's area."""
    device: str | None = None
    """plain/generic: the device name, instead of one taken from the topic."""
    metric: str | None = None
    """plain: the metric name, instead of the topic's last level."""
    fields: Mapping[str, str] = field(default_factory=_empty)
    """generic: metric name -> path into the JSON document."""
    on_name: Callable[[str, str], None] | None = field(default=None, compare=False)
    """Told (device, name) when a device announces its display name (Home Assistant's
    ``friendly_name``); the narrator's names learn it."""


@dataclass(frozen=True, slots=True)
class Source:
    """Everything an adapter needs besides the message; built once per subscription."""

    adapter: Adapter
    prefix: str
    """The subscription filter's literal part before any wildcard, e.g. ``zigbee2mqtt/``."""
    area: str | None = None
    options: SourceOptions = field(default_factory=SourceOptions)
    paths: tuple[tuple[str, tuple[Step, ...]], ...] = ()
    """generic: ``options.fields`` compiled once, as (metric, steps)."""

    def parse(self, topic: str, payload: Payload, now: float) -> list[SensorEvent]:
        """Run the adapter; an empty payload (a retained message being deleted) is no event."""
        if not payload.raw:
            return []
        return self.adapter(topic, payload, self, now)

    def event(
        self,
        device: str,
        metric: str,
        value: float,
        topic: str,
        now: float,
        unit: str | None = None,
        default_unit: str | None = None,
    ) -> SensorEvent:
        """One event with config applied; raises ``not_finite`` or ``out_of_range``.

        ``unit`` comes from the payload and wins; ``default_unit`` is the adapter's own
        knowledge of the ecosystem, used only when the config names no unit either.
        """
        if not math.isfinite(value):
            raise PayloadError("not_finite", f"{device} {metric} is {value}")
        opts = self.options
        # The maps are usually empty; checking first keeps the common path to two tests.
        if opts.ranges:
            bounds = opts.ranges.get(f"{device}.{metric}") or opts.ranges.get(metric)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise PayloadError(
                    "out_of_range",
                    f"{device} {metric}={value} is outside [{bounds[0]}, {bounds[1]}]",
                )
        if unit is None:
            if opts.units:
                unit = opts.units.get(f"{device}.{metric}") or opts.units.get(metric)
            if unit is None:
                unit = default_unit
        area = opts.device_areas.get(device, self.area) if opts.device_areas else self.area
        return SensorEvent(device, metric, value, now, topic, unit, area)


def topic_rest(topic: str, prefix: str) -> str:
    """The topic after the subscription's literal prefix (all of it if it does not match)."""
    return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic
