"""Anomaly detection per reading: thresholds, rolling z-score, jumps and silent sensors.

Late readings (``SensorEvent.late``) are checked against thresholds only. Each check is
O(1) per reading: the z-score uses the running sums the
:class:`~edge_agent.facts.WindowStore` keeps, never a rescan of the window.

Thresholds have a lifecycle (``excursions.py``): one ``started`` per excursion, reminders
only for metrics with ``repeat_s``, one ``resolved``. Jumps and z-scores that a state change
nearby explains become findings instead (``explain.py``). The other kinds are deduplicated
by (device, metric, kind): an active one is raised again only after ``cooldown_s``, and with
``clear_on_recovery`` a reading back in range ends it, so the next one is raised at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from edge_agent.domain import Anomaly, AnomalyKind, Excursion, ExplainedChange, SensorEvent
from edge_agent.excursions import ExcursionTracker, Limits
from edge_agent.excursions import fmt_duration as _duration
from edge_agent.excursions import fmt_value as _fmt
from edge_agent.explain import DEFAULT_EXPLAINED_BY, ChangeExplainer
from edge_agent.facts import Baseline, WindowStore

Key = tuple[str, str, AnomalyKind]

DEFAULT_THRESHOLDS: Mapping[str, Mapping[str, float]] = {"co2": {"max": 1200.0}}
"""The normal ranges with no configuration: CO2 above 1,200 ppm (stale indoor air) is an
alert. ``anomalies.thresholds`` defaults to this; an empty table turns it off."""


class AnomalyDetector:
    """Turns readings into :class:`Anomaly` records; keyword names match ``AnomalySettings``.

    ``thresholds`` maps a metric to ``{"min": ..., "max": ...}`` (either may be None, plus
    the optional ``hysteresis``, ``hysteresis_abs`` and ``repeat_s`` of
    :class:`~edge_agent.excursions.Limits`); a reading outside ``[min, max]`` starts an
    excursion, which ends once the reading is back inside by ``threshold_hysteresis`` x the
    limit. ``jumps`` maps a metric to the smallest step between consecutive readings that
    counts as a jump. ``explained_by``, ``explain_window_s``, ``explain`` (per-metric
    overrides) and ``level_transitions`` configure :class:`~edge_agent.explain.ChangeExplainer`.
    """

    def __init__(
        self,
        *,
        thresholds: Mapping[str, Mapping[str, Any]] | None = None,
        jumps: Mapping[str, float] | None = None,
        zscore_k: float = 4.0,
        zscore_min_count: int = 30,
        zscore_min_rel_std: float = 0.01,
        cooldown_s: float = 900.0,
        clear_on_recovery: bool = True,
        threshold_hysteresis: float = 0.05,
        explained_by: Iterable[str] = DEFAULT_EXPLAINED_BY,
        explain_window_s: float = 600.0,
        explain: Mapping[str, Mapping[str, Any]] | None = None,
        level_transitions: Mapping[str, float] | None = None,
    ) -> None:
        self.excursions = ExcursionTracker(
            {
                metric: Limits.from_mapping(bounds, threshold_hysteresis)
                for metric, bounds in (
                    DEFAULT_THRESHOLDS if thresholds is None else thresholds
                ).items()
            }
        )
        """Open threshold excursions: ``open_in(area)`` is what summaries read."""
        self.explainer = ChangeExplainer(
            explained_by=explained_by,
            window_s=explain_window_s,
            level_steps=level_transitions,
            rules=explain,
        )
        """Transitions and the findings that replaced anomalies: ``explained_in(area)``."""
        self._jumps = dict(jumps or {})
        self._k = zscore_k
        self._min_count = max(zscore_min_count, 2)
        self._min_rel_std = zscore_min_rel_std
        self._cooldown_s = cooldown_s
        self._clear = clear_on_recovery
        self._last_raised: dict[Key, float] = {}
        """Active anomalies and when each was last raised."""

    def active(self) -> frozenset[Key]:
        """Keys of the anomalies currently active (raised and not cleared)."""
        excursions: set[Key] = {
            (e.device, e.metric, "threshold") for e in self.excursions.open_all()
        }
        return frozenset(self._last_raised).union(excursions)

    def open_in(self, area: str | None) -> tuple[Excursion, ...]:
        """Open threshold excursions of one area (for its summary)."""
        return self.excursions.open_in(area)

    def explained_in(self, area: str | None) -> tuple[ExplainedChange, ...]:
        """Recent changes of one area that a state change explained (for its summary)."""
        return self.explainer.explained_in(area)

    def check(self, event: SensorEvent, store: WindowStore) -> list[Anomaly]:
        """Anomalies that ``event`` raises, and held ones whose window passed; call it for
        every reading, before or after ``store.add(event)`` (the baseline leaves the event
        out either way)."""
        out: list[Anomaly] = []
        device, metric, now = event.device, event.metric, event.ts
        if self._last_raised:
            # It spoke, so it is no longer silent, whatever clear_on_recovery says.
            self._last_raised.pop((device, metric, "stale"), None)
        out += self.excursions.update(event)
        if event.late:
            # A reading from the past (a backlog after an outage): its step from the
            # live "previous" reading is no jump, and it says nothing unusual about now.
            return out
        base = store.baseline(event)
        if base is None:
            out += self.explainer.release(now)
            return out
        self.explainer.observe(event, base.previous, base.binary)
        candidates: list[Anomaly] = []
        jump = self._jumps.get(metric)
        if jump is not None and base.previous is not None:
            key: Key = (device, metric, "jump")
            delta = event.value - base.previous
            if abs(delta) < jump:
                self._end(key)
            elif self._due(key, now):
                msg = (
                    f"{device} {metric} jumped by {_fmt(delta, event.unit, signed=True)} "
                    f"to {_fmt(event.value, event.unit)} (jump limit {_fmt(jump, event.unit)})"
                )
                candidates.append(_anomaly("jump", event, msg, threshold=jump))
        if not base.binary and base.count >= self._min_count:
            self._check_zscore(event, base, candidates)
        for candidate in candidates:
            # Held until a state change nearby may explain it; published later if none does.
            if not self.explainer.hold(candidate, base.previous):
                out.append(candidate)
        out += self.explainer.release(now)
        return out

    def check_stale(self, store: WindowStore, now: float) -> list[Anomaly]:
        """Stale anomalies for sensors that went silent; call it every few seconds or
        on each summary tick (a reading for the series ends the anomaly)."""
        # Forget keys past their cooldown: _due would raise them again anyway, and
        # without clear_on_recovery this is what keeps the map bounded.
        cooldown = self._cooldown_s
        self._last_raised = {k: t for k, t in self._last_raised.items() if now - t < cooldown}
        out = self.explainer.release(now)
        for s in store.silent(now):
            key: Key = (s.device, s.metric, "stale")
            if not self._due(key, now):
                continue
            msg = (
                f"{s.device} {s.metric}: no reading for {_duration(now - s.last_ts)} "
                f"(usually every {_duration(s.interval_s)}); last {_fmt(s.last_value, s.unit)}"
            )
            out.append(
                Anomaly(
                    "stale",
                    s.device,
                    s.metric,
                    s.last_value,
                    now,
                    msg,
                    unit=s.unit,
                    area=s.area,
                    threshold=s.limit_s,
                    last_ts=s.last_ts,
                )
            )
        return out

    def _check_zscore(self, event: SensorEvent, base: Baseline, out: list[Anomaly]) -> None:
        # Quantised sensors (21.0, 21.0, 21.1) have a tiny spread: floor it relative to the
        # mean so one step of resolution is not an anomaly.
        std = max(base.std, self._min_rel_std * abs(base.mean))
        if std <= 0:
            return  # a constant series: a z-score means nothing (use a threshold or jump)
        key: Key = (event.device, event.metric, "zscore")
        z = (event.value - base.mean) / std
        if abs(z) < self._k:
            self._end(key)
        elif self._due(key, event.ts):
            msg = (
                f"{event.device} {event.metric} is {_fmt(event.value, event.unit)}, "
                f"unusual for the last {base.count} readings (mean {_fmt(base.mean, event.unit)}, "
                f"z = {z:.1f})"
            )
            out.append(_anomaly("zscore", event, msg, threshold=self._k, z=z))

    def _due(self, key: Key, now: float) -> bool:
        """True (and marks it raised) unless ``key`` is active and within its cooldown."""
        last = self._last_raised.get(key)
        if last is not None and now - last < self._cooldown_s:
            return False
        self._last_raised[key] = now
        return True

    def _end(self, key: Key) -> None:
        """The condition is back in range: forget it so the next excursion raises at once.

        Without ``clear_on_recovery`` the cooldown alone decides, which damps flapping.
        """
        if self._clear:
            self._last_raised.pop(key, None)


def _anomaly(
    kind: AnomalyKind,
    event: SensorEvent,
    message: str,
    *,
    threshold: float | None = None,
    z: float | None = None,
) -> Anomaly:
    return Anomaly(
        kind,
        event.device,
        event.metric,
        event.value,
        event.ts,
        message,
        unit=event.unit,
        area=event.area,
        threshold=threshold,
        z=z,
    )
