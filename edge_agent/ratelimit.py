"""Rate limits of anomaly notifications: per metric of an area, per area, and in total.

Each limit counts the notifications let through in the last ``period_s`` (a sliding window,
so "2 per hour" holds for any hour, not per clock hour). A notification is let through only
when every limit it falls under has room; then it counts against all of them. The clock is
the anomaly's own time, so a replay of recorded data is paced as it was lived.

What counts: ``started`` and ``reminder`` of threshold excursions and the one-off kinds
(z-score, jump, stale). Over a limit, a reminder or a one-off anomaly is dropped. A
``started`` is still published, with ``notify: false``, so that every excursion keeps its
one ``started`` and one ``resolved`` for subscribers and the "alert active" state; the
blueprint sends no notification for it, and its ``resolved`` is marked the same way unless
a reminder announced the excursion since. A ``resolved`` never counts.
Pure: no I/O; the state file keeps the silenced excursions across restarts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from edge_agent.domain import Anomaly

Decision = Literal["notify", "quiet", "drop"]
"""Publish and notify; publish with ``notify: false``; do not publish."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limits; 0 suppresses everything of that scope."""

    period_s: float = 3600.0
    per_metric: int = 2
    per_area: int = 4
    total: int = 6
    metrics: Mapping[str, int] = field(default_factory=dict)
    """Per metric name, its own ``per_metric``."""
    areas: Mapping[str, int] = field(default_factory=dict)
    """Per area, its own ``per_area``."""


class NotificationLimiter:
    """Decides which anomaly events reach subscribers; counts what it suppressed."""

    def __init__(self, limits: RateLimits, silenced: Iterable[str] = ()) -> None:
        self._limits = limits
        self._sent: dict[tuple[str, ...], deque[float]] = {}
        self._silenced: set[str] = set(silenced)
        """Excursions whose start was suppressed and that no reminder announced since."""
        self.suppressed_total = 0
        self.suppressed_by_kind: dict[str, int] = {}

    @property
    def silenced(self) -> frozenset[str]:
        """Ids of the open excursions nobody was told about (saved across restarts)."""
        return frozenset(self._silenced)

    def decide(self, anomaly: Anomaly) -> Decision:
        """What to do with ``anomaly``; anything but ``notify`` is counted as suppressed."""
        ident = anomaly.excursion_id
        if anomaly.phase == "resolved":
            if ident is not None and ident in self._silenced:
                self._silenced.discard(ident)
                self._count(anomaly)
                return "quiet"
            return "notify"
        keys = self._keys(anomaly)
        now = anomaly.ts
        for key, limit in keys:
            sent = self._window(key, now)
            if len(sent) >= limit:
                self._count(anomaly)
                if ident is not None and anomaly.phase == "started":
                    self._silenced.add(ident)
                    return "quiet"
                return "drop"
        for key, _limit in keys:
            self._sent[key].append(now)
        if ident is not None:
            self._silenced.discard(ident)  # a reminder let through announces it
        return "notify"

    def admit(self, anomaly: Anomaly) -> bool:
        """True when ``anomaly`` may notify (:meth:`decide` says ``notify``)."""
        return self.decide(anomaly) == "notify"

    def _keys(self, anomaly: Anomaly) -> list[tuple[tuple[str, ...], int]]:
        lim = self._limits
        area = anomaly.area if anomaly.area is not None else f"device:{anomaly.device}"
        return [
            (("metric", area, anomaly.metric), lim.metrics.get(anomaly.metric, lim.per_metric)),
            (("area", area), lim.areas.get(area, lim.per_area)),
            (("total",), lim.total),
        ]

    def _window(self, key: tuple[str, ...], now: float) -> deque[float]:
        sent = self._sent.setdefault(key, deque())
        start = now - self._limits.period_s
        while sent and sent[0] <= start:
            sent.popleft()
        return sent

    def _count(self, anomaly: Anomaly) -> None:
        self.suppressed_total += 1
        kind = anomaly.event_type
        self.suppressed_by_kind[kind] = self.suppressed_by_kind.get(kind, 0) + 1
