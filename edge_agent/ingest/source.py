"""A subscription's parse context (adapter, topic prefix, per-source config) and the
:class:`Parsed` outcome every adapter returns."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest.limits import check_name
from edge_agent.ingest.paths import Step
from edge_agent.ingest.payload import Payload

IgnoreReason = Literal["empty", "not_readings", "no_reading", "metadata"]
"""Why a message deliberately gives no event (and no dead letter):

- ``empty``: an empty payload, i.e. a retained message being deleted;
- ``not_readings``: a topic that never carries readings (zigbee2mqtt ``bridge/...`` and
  ``/set``/``/get`` requests, Tasmota ``INFO``/``cmnd``/replies without state, ESPHome
  commands, debug and non-numeric components);
- ``no_reading``: Home Assistant's placeholder states ``unavailable``/``unknown``/``none``;
- ``metadata``: statestream timestamps and descriptive attributes (``friendly_name``...).
"""
IGNORE_REASONS: tuple[str, ...] = get_args(IgnoreReason)


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one message gave: events, fields dropped for their type, or an ignore.

    Exactly one outcome holds for a well-formed result: ``events`` (possibly with
    ``rejected`` fields, which the agent reports in one ``wrong_type_fields`` dead
    letter), or ``ignored`` with no events. Input that cannot be used at all raises
    :class:`PayloadError` instead.
    """

    events: list[SensorEvent]
    rejected: tuple[str, ...] = ()
    """``"<field>: <why>"`` for each field dropped because of its type."""
    ignored: IgnoreReason | None = None

    @staticmethod
    def ignore(reason: IgnoreReason) -> Parsed:
        """No event, on purpose, for ``reason``."""
        return Parsed([], (), reason)


Adapter = Callable[[str, Payload, "Source", float], Parsed]
"""``(topic, payload, source, receive time) -> Parsed``.

An adapter decodes the payload itself (``payload.text()`` or ``payload.json()``, which
apply the size, UTF-8, depth, number and Unicode checks), builds every event through
:meth:`Source.event` (which applies the configured units, areas and ranges and checks
names), returns :meth:`Parsed.ignore` for topics it deliberately ignores, lists fields
of the wrong type in ``rejected``, and raises :class:`PayloadError` for input it cannot use.
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
    time_path: str | None = None
    """generic: path to the reading's own time (ISO 8601 or epoch s/ms) in the document."""
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
    time_steps: tuple[Step, ...] | None = None
    """generic: ``options.time_path`` compiled once."""

    def read(self, topic: str, payload: Payload, now: float) -> Parsed:
        """Run the adapter; an empty payload (a retained message being deleted) is ignored.

        Raises ``wrong_type_fields`` when every usable field had the wrong type.
        """
        if not payload.raw:
            return _EMPTY_PAYLOAD
        parsed = self.adapter(topic, payload, self, now)
        if parsed.rejected and not parsed.events:
            raise PayloadError("wrong_type_fields", "; ".join(parsed.rejected))
        return parsed

    def parse(self, topic: str, payload: Payload, now: float) -> list[SensorEvent]:
        """The events of :meth:`read` alone (benches and tests of the happy path)."""
        return self.read(topic, payload, now).events

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
        """One event with config applied; raises ``not_finite``, ``out_of_range`` or
        ``bad_name``. ``now`` is the reading's time (the payload's own, or receive time).

        ``unit`` comes from the payload and wins; ``default_unit`` is the adapter's own
        knowledge of the ecosystem, used only when the config names no unit either.
        """
        if not math.isfinite(value):
            raise PayloadError("not_finite", f"{device} {metric} is {value}")
        check_name(device, "device")
        check_name(metric, "metric")
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


_EMPTY_PAYLOAD = Parsed.ignore("empty")


def topic_rest(topic: str, prefix: str) -> str:
    """The topic after the subscription's literal prefix (all of it if it does not match)."""
    return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic
