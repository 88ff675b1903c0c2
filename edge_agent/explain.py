"""Expected changes are findings, not anomalies: jumps and z-scores explained by a state change.

A *transition* is a state change of a series:

* a binary series (0/1 readings without a unit: occupancy, contact, motion, a switch's
  ``state``) changing value;
* a level series listed in ``level_steps`` (light, illuminance) moving by at least its step
  between two consecutive readings: a lamp switched on or off, a blind opened.

A jump or z-score anomaly of a metric is *explained* when a transition of one of the metrics
in its ``explained_by`` list happened on the same device, or in the same area, within
``window_s`` before or after it. The window looks both ways because sensors report
independently: the light may report its 0 -> 450 lx before the occupancy sensor reports the
arrival that caused it. So a candidate is held for ``window_s`` and decided then: explained,
it becomes an :class:`~edge_agent.domain.ExplainedChange` kept for the area's summary;
unexplained, it is released as the anomaly it was, ``window_s`` late. Metrics whose
``explained_by`` is empty are never held.

Pure: readings in, anomalies and findings out, the clock being the readings' own times.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent.domain import Anomaly, ExplainedChange, SensorEvent

DEFAULT_EXPLAINED_BY = (
    "occupancy",
    "presence",
    "motion",
    "contact",
    "state",
    "light",
    "illuminance",
    "illuminance_lux",
)
"""Transitions that explain a change when a metric has no rule of its own."""

DEFAULT_LEVEL_STEPS = {"light": 50.0, "illuminance": 50.0, "illuminance_lux": 50.0}
"""Level metrics whose step between two readings (lx) counts as a state-like transition."""

_NEVER = float("inf")

_KEEP_TRANSITIONS = 2000
"""Transitions remembered at most, whatever their age (a flapping contact stays bounded)."""


@dataclass(frozen=True, slots=True)
class ExplainRule:
    """Which transitions explain one metric's changes, and how far apart in time."""

    explained_by: frozenset[str]
    window_s: float

    @property
    def active(self) -> bool:
        """False when nothing can explain this metric: its anomalies are never held."""
        return bool(self.explained_by) and self.window_s > 0


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one series."""

    device: str
    metric: str
    area: str | None
    ts: float
    value: float
    previous: float
    binary: bool


@dataclass(frozen=True, slots=True)
class _Held:
    anomaly: Anomaly
    previous: float | None
    rule: ExplainRule


class ChangeExplainer:
    """Records transitions, holds jump/z-score candidates, and decides which are explained."""

    def __init__(
        self,
        *,
        explained_by: Iterable[str] = DEFAULT_EXPLAINED_BY,
        window_s: float = 600.0,
        level_steps: Mapping[str, float] | None = None,
        rules: Mapping[str, Mapping[str, Any]] | None = None,
        keep_per_area: int = 50,
        keep_s: float = 3600.0,
    ) -> None:
        self._default = ExplainRule(frozenset(explained_by), window_s)
        self._rules: dict[str, ExplainRule] = {}
        for metric, rule in (rules or {}).items():
            by = rule.get("explained_by")
            win = rule.get("window_s")
            self._rules[metric] = ExplainRule(
                self._default.explained_by if by is None else frozenset(by),
                window_s if win is None else float(win),
            )
        self._steps = dict(DEFAULT_LEVEL_STEPS if level_steps is None else level_steps)
        self._watched = self._default.explained_by.union(
            *(r.explained_by for r in self._rules.values())
        )
        self._transitions: deque[Transition] = deque(maxlen=_KEEP_TRANSITIONS)
        self._max_window = max(
            [self._default.window_s, *(r.window_s for r in self._rules.values())]
        )
        self._held: list[_Held] = []
        self._next_due = _NEVER
        """The earliest time a held candidate is decided."""
        self._explained: dict[str | None, deque[ExplainedChange]] = {}
        self._keep_per_area = keep_per_area
        self._keep_s = keep_s
        self._now = float("-inf")
        self.explained_total = 0
        self.on_explained: Callable[[ExplainedChange], None] | None = None
        """Called with every new finding (the replay bench keeps them all)."""

    @property
    def max_window_s(self) -> float:
        """The longest window of any rule: how long a candidate may be held."""
        return self._max_window

    def rule(self, metric: str) -> ExplainRule:
        """The rule of ``metric``: its own, or the default."""
        return self._rules.get(metric, self._default)

    def observe(self, event: SensorEvent, previous: float | None, binary: bool) -> None:
        """Note ``event``'s transition, if it is one; ``previous`` is the series' reading
        before it and ``binary`` whether the series has been 0/1 without a unit so far."""
        if previous is None or event.metric not in self._watched:
            return
        value = event.value
        if binary and event.unit is None and value in (0.0, 1.0):
            is_binary = True
            changed = value != previous
        else:
            step = self._steps.get(event.metric)
            is_binary = False
            changed = step is not None and abs(value - previous) >= step
        if changed:
            self._transitions.append(
                Transition(
                    event.device, event.metric, event.area, event.ts, value, previous, is_binary
                )
            )

    def hold(self, anomaly: Anomaly, previous: float | None) -> bool:
        """Hold a jump/z-score candidate until its window has passed; False when its metric
        has no active rule (the caller publishes it at once)."""
        rule = self.rule(anomaly.metric)
        if not rule.active:
            return False
        self._held.append(_Held(anomaly, previous, rule))
        self._next_due = min(self._next_due, anomaly.ts + rule.window_s)
        return True

    def release(self, now: float) -> list[Anomaly]:
        """Decide every candidate whose window has passed by ``now``: explained ones become
        findings, the rest are returned as anomalies."""
        if now > self._now:
            self._now = now
        now = self._now
        if now <= self._next_due:  # the common case, checked on every reading: O(1)
            return []
        due = [h for h in self._held if now > h.anomaly.ts + h.rule.window_s]
        self._held = [h for h in self._held if not now > h.anomaly.ts + h.rule.window_s]
        self._next_due = min((h.anomaly.ts + h.rule.window_s for h in self._held), default=_NEVER)
        out = []
        for held in due:
            cause = self._cause(held)
            if cause is None:
                out.append(held.anomaly)
            else:
                self._remember(held, cause)
        self._prune(now)
        return out

    def pending(self) -> int:
        """Candidates still waiting for their window to pass."""
        return len(self._held)

    def explained_in(self, area: str | None) -> tuple[ExplainedChange, ...]:
        """Recent findings of one area, oldest first (for its summary)."""
        found = self._explained.get(area)
        if not found:
            return ()
        return tuple(c for c in found if c.ts >= self._now - self._keep_s)

    def transitions_in(self, area: str | None) -> tuple[Transition, ...]:
        """Recent transitions of one area, oldest first."""
        return tuple(t for t in self._transitions if t.area == area)

    def _cause(self, held: _Held) -> Transition | None:
        a, rule = held.anomaly, held.rule
        best: tuple[tuple[int, int, float], Transition] | None = None
        for t in self._transitions:
            if t.metric not in rule.explained_by or abs(t.ts - a.ts) > rule.window_s:
                continue
            same_device = t.device == a.device
            if not same_device and (a.area is None or t.area != a.area):
                continue
            # Prefer another series (the occupancy behind the light) to the series' own step,
            # then a binary state to a level, then the nearest in time.
            own = int(same_device and t.metric == a.metric)
            rank = (own, int(not t.binary), abs(t.ts - a.ts))
            if best is None or rank < best[0]:
                best = (rank, t)
        return None if best is None else best[1]

    def _remember(self, held: _Held, cause: Transition) -> None:
        a = held.anomaly
        change = ExplainedChange(
            device=a.device,
            metric=a.metric,
            value=a.value,
            previous=held.previous,
            ts=a.ts,
            kind=a.kind,
            cause_device=cause.device,
            cause_metric=cause.metric,
            cause_value=cause.value,
            cause_ts=cause.ts,
            unit=a.unit,
            area=a.area,
            cause_previous=cause.previous,
        )
        kept = self._explained.setdefault(a.area, deque(maxlen=self._keep_per_area))
        kept.append(change)
        self.explained_total += 1
        if self.on_explained is not None:
            self.on_explained(change)

    def _prune(self, now: float) -> None:
        horizon = now - 2 * self._max_window
        while self._transitions and self._transitions[0].ts < horizon:
            self._transitions.popleft()
