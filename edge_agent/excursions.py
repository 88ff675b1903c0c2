"""Threshold excursions with a lifecycle: started, reminder (only when asked for), resolved.

A reading beyond a metric's limit opens an excursion and raises ``started``. While it lasts
nothing more is raised, unless the metric has ``repeat_s``: then a ``reminder`` follows every
``repeat_s`` of the excursion (on the next reading after that time). The excursion ends with
``resolved`` once a reading is back inside the limit by the hysteresis margin, carrying the
duration and the peak, so a value hovering at the limit gives one start and one end.

Pure: the open excursions go out as :class:`OpenExcursion` records (:meth:`snapshot`) and
come back after a restart (:meth:`restore`); the file they live in is ``alertstate.py``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from edge_agent.domain import Anomaly, Excursion, ExcursionPhase, SensorEvent

Direction = Literal["above", "below"]


@dataclass(frozen=True, slots=True)
class Limits:
    """One metric's allowed range and how its excursions behave."""

    min: float | None = None
    max: float | None = None
    hysteresis: float = 0.05
    """Back inside by this fraction of the limit ends an excursion (co2 max 1200: <= 1140)."""
    hysteresis_abs: float | None = None
    """Back inside by this many units instead; wins over ``hysteresis`` (limits near 0)."""
    repeat_s: float | None = None
    """Seconds between reminders while an excursion lasts; None: no reminders."""

    @classmethod
    def from_mapping(cls, bounds: Mapping[str, Any], default_hysteresis: float) -> Limits:
        """From a settings mapping (``ThresholdBounds`` dumped); unset keys take defaults."""
        rel = bounds.get("hysteresis")
        return cls(
            min=bounds.get("min"),
            max=bounds.get("max"),
            hysteresis=default_hysteresis if rel is None else float(rel),
            hysteresis_abs=bounds.get("hysteresis_abs"),
            repeat_s=bounds.get("repeat_s"),
        )

    def margin(self, limit: float) -> float:
        """How far inside ``limit`` a reading must come back to end an excursion."""
        if self.hysteresis_abs is not None:
            return self.hysteresis_abs
        return self.hysteresis * abs(limit)

    def crossed(self, value: float) -> tuple[Direction, float] | None:
        """The side and limit ``value`` is beyond, if any."""
        if self.max is not None and value > self.max:
            return "above", self.max
        if self.min is not None and value < self.min:
            return "below", self.min
        return None

    def limit(self, direction: Direction) -> float | None:
        """The configured bound on that side."""
        return self.max if direction == "above" else self.min


@dataclass(frozen=True, slots=True)
class OpenExcursion:
    """An open excursion with the bookkeeping that must survive a restart."""

    excursion: Excursion
    last_ts: float
    """Time of the latest reading."""
    last_notice_ts: float
    """Time of the last ``started`` or ``reminder``: reminders count from here."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the state file's record)."""
        e = self.excursion
        return {
            "device": e.device,
            "metric": e.metric,
            "limit": e.limit,
            "direction": e.direction,
            "started_at": e.started_at,
            "peak": e.peak,
            "last": e.last,
            "unit": e.unit,
            "area": e.area,
            "last_ts": self.last_ts,
            "last_notice_ts": self.last_notice_ts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenExcursion:
        """Decode a record; raises ValueError (or KeyError/TypeError) when malformed."""
        direction = data["direction"]
        if direction not in ("above", "below"):
            raise ValueError(f"direction {direction!r} is not 'above' or 'below'")
        unit, area = data.get("unit"), data.get("area")
        excursion = Excursion(
            device=str(data["device"]),
            metric=str(data["metric"]),
            limit=float(data["limit"]),
            direction=direction,
            started_at=float(data["started_at"]),
            peak=float(data["peak"]),
            last=float(data["last"]),
            unit=None if unit is None else str(unit),
            area=None if area is None else str(area),
        )
        return cls(excursion, float(data["last_ts"]), float(data["last_notice_ts"]))


class ExcursionTracker:
    """Open excursions per (device, metric), and the lifecycle anomalies they raise."""

    def __init__(self, limits: Mapping[str, Limits] | None = None) -> None:
        self._limits = dict(limits or {})
        self._open: dict[tuple[str, str], OpenExcursion] = {}
        self.dirty = False
        """Something worth saving changed since :meth:`snapshot` was last taken."""

    @property
    def metrics(self) -> frozenset[str]:
        """Metrics that have limits."""
        return frozenset(self._limits)

    def update(self, event: SensorEvent) -> list[Anomaly]:
        """Lifecycle anomalies ``event`` raises: none, one, or two (resolved then started
        when a reading jumps from beyond one limit to beyond the other)."""
        limits = self._limits.get(event.metric)
        if limits is None:
            return []
        out: list[Anomaly] = []
        key = (event.device, event.metric)
        current = self._open.get(key)
        crossed = limits.crossed(event.value)
        if current is not None:
            exc = current.excursion
            if crossed is not None and crossed[0] == exc.direction:
                out += self._extend(key, current, event, limits)
                return out
            if crossed is not None or self._back_inside(exc, limits, event.value):
                out.append(self._resolve(key, current, event))
            else:
                # Inside the limit but within the hysteresis band: still the same excursion.
                self._open[key] = replace(
                    current, excursion=replace(exc, last=event.value), last_ts=event.ts
                )
                return out
        if crossed is not None:
            direction, limit = crossed
            exc = Excursion(
                event.device,
                event.metric,
                limit,
                direction,
                started_at=event.ts,
                peak=event.value,
                last=event.value,
                unit=event.unit,
                area=event.area,
            )
            self._open[key] = OpenExcursion(exc, event.ts, event.ts)
            self.dirty = True
            out.append(_lifecycle("started", exc, event))
        return out

    def open_in(self, area: str | None) -> tuple[Excursion, ...]:
        """Open excursions of one area, oldest first (what a summary reports)."""
        found = [o.excursion for o in self._open.values() if o.excursion.area == area]
        return tuple(sorted(found, key=lambda e: (e.started_at, e.device, e.metric)))

    def open_all(self) -> tuple[Excursion, ...]:
        """Every open excursion, oldest first."""
        found = [o.excursion for o in self._open.values()]
        return tuple(sorted(found, key=lambda e: (e.started_at, e.device, e.metric)))

    def is_open(self, device: str, metric: str) -> bool:
        """True while (device, metric) is beyond its limit."""
        return (device, metric) in self._open

    def snapshot(self) -> tuple[OpenExcursion, ...]:
        """The open excursions to save; clears :attr:`dirty`."""
        self.dirty = False
        return tuple(self._open[k] for k in sorted(self._open))

    def restore(
        self, records: Iterable[OpenExcursion], *, now: float, max_age_s: float
    ) -> tuple[OpenExcursion, ...]:
        """Take back excursions saved before a restart; returns the ones kept.

        A record whose metric has no limit on that side any more, or whose last reading is
        older than ``max_age_s`` (the sensor is gone), is dropped. The configured limit
        replaces the saved one, so a changed limit applies from the next reading.
        """
        kept = []
        for record in records:
            exc = record.excursion
            limits = self._limits.get(exc.metric)
            limit = None if limits is None else limits.limit(exc.direction)
            if limit is None or now - record.last_ts > max_age_s:
                continue
            record = replace(record, excursion=replace(exc, limit=limit))
            self._open[(exc.device, exc.metric)] = record
            kept.append(record)
        return tuple(kept)

    def _extend(
        self, key: tuple[str, str], current: OpenExcursion, event: SensorEvent, limits: Limits
    ) -> list[Anomaly]:
        exc = current.excursion
        further = event.value > exc.peak if exc.direction == "above" else event.value < exc.peak
        if further:
            self.dirty = True
        exc = replace(exc, peak=event.value if further else exc.peak, last=event.value)
        notice = current.last_notice_ts
        out = []
        if limits.repeat_s is not None and event.ts - notice >= limits.repeat_s:
            notice = event.ts
            self.dirty = True
            out.append(_lifecycle("reminder", exc, event))
        self._open[key] = OpenExcursion(exc, event.ts, notice)
        return out

    def _resolve(self, key: tuple[str, str], current: OpenExcursion, event: SensorEvent) -> Anomaly:
        del self._open[key]
        self.dirty = True
        exc = replace(current.excursion, last=event.value, resolved_at=event.ts)
        return _lifecycle("resolved", exc, event)

    @staticmethod
    def _back_inside(exc: Excursion, limits: Limits, value: float) -> bool:
        margin = limits.margin(exc.limit)
        if exc.direction == "above":
            return value <= exc.limit - margin
        return value >= exc.limit + margin


def _lifecycle(phase: ExcursionPhase, exc: Excursion, event: SensorEvent) -> Anomaly:
    """The anomaly record of one lifecycle step, with a message a person reads at a glance."""
    value, unit = event.value, event.unit
    name = f"{exc.device} {exc.metric}"
    limit = fmt_value(exc.limit, unit)
    duration = event.ts - exc.started_at
    if phase == "started":
        msg = f"{name} is {fmt_value(value, unit)}, {exc.direction} the {limit} limit"
    elif phase == "reminder":
        msg = (
            f"{name} is still {exc.direction} the {limit} limit: {fmt_value(value, unit)} "
            f"after {fmt_duration(duration)}, peak {fmt_value(exc.peak, unit)}"
        )
    else:
        back = "below" if exc.direction == "above" else "above"
        msg = (
            f"{name} is back {back} the {limit} limit ({fmt_value(value, unit)}) after "
            f"{fmt_duration(duration)}; peak {fmt_value(exc.peak, unit)}"
        )
    return Anomaly(
        "threshold",
        exc.device,
        exc.metric,
        value,
        event.ts,
        msg,
        unit=unit,
        area=exc.area,
        threshold=exc.limit,
        phase=phase,
        started_at=exc.started_at,
        peak=exc.peak,
        duration_s=None if phase == "started" else duration,
    )


def fmt_value(value: float, unit: str | None, *, signed: bool = False) -> str:
    """Short human number: at most two decimals, no trailing zeros, with the unit."""
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    text = text.rstrip("0").rstrip(".")
    return f"{text} {unit}" if unit else text


def fmt_duration(seconds: float) -> str:
    """Seconds as a short duration a person reads at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
