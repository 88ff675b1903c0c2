"""Between the detector and the broker: rate limits, "alert active" states, saved excursions.

For every anomaly the agent asks :meth:`Alerts.on_anomaly` whether to publish it (rate
limits) and which retained "alert active" states changed: ``<base>/alert`` for the whole
agent and ``<base>/alert/<area>`` per area, each ``{"active": ..., "open": [...]}``, which
Home Assistant shows as binary sensors. Lifecycle steps save the open excursions at once;
a rising peak is saved by :meth:`save` on the agent's tick.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import structlog

from edge_agent.alertstate import AlertState, AlertStateFile
from edge_agent.domain import SCHEMA_VERSION, Anomaly, Excursion, Topics
from edge_agent.excursions import ExcursionTracker
from edge_agent.ratelimit import NotificationLimiter

log = structlog.get_logger(__name__)

Publish = tuple[str, bytes]


class Alerts:
    """The alert side of the agent; pure but for the state file."""

    def __init__(
        self,
        tracker: ExcursionTracker,
        limiter: NotificationLimiter | None,
        *,
        topics: Topics,
        state_file: AlertStateFile | None = None,
        areas: Iterable[str] = (),
    ) -> None:
        self._tracker = tracker
        self._limiter = limiter
        self._topics = topics
        self._file = state_file
        self._areas: dict[str, None] = dict.fromkeys(areas)
        """Areas whose state is published: the configured ones and every one seen open."""
        for exc in tracker.open_all():
            if exc.area is not None:
                self._areas.setdefault(exc.area)
        self.notifications_total = 0

    def on_anomaly(self, anomaly: Anomaly) -> tuple[Anomaly | None, list[Publish]]:
        """What to publish for ``anomaly`` (None: nothing; ``notify`` False: held back by a
        rate limit), and the retained states it changed."""
        changed: list[Publish] = []
        if anomaly.phase in ("started", "resolved"):
            if anomaly.area is not None:
                self._areas.setdefault(anomaly.area)
                changed.append(self._state(anomaly.area))
            changed.append(self._state(None))
        decision = "notify" if self._limiter is None else self._limiter.decide(anomaly)
        if decision == "notify" and anomaly.phase != "resolved":
            self.notifications_total += 1
        if decision != "notify":
            log.info(
                "anomaly_suppressed",
                event_type=anomaly.event_type,
                device=anomaly.device,
                metric=anomaly.metric,
                area=anomaly.area,
                published=decision == "quiet",
            )
        if anomaly.phase is not None:
            self.save(force=True)
        if decision == "drop":
            return None, changed
        return (anomaly if decision == "notify" else replace(anomaly, notify=False)), changed

    def states(self) -> list[Publish]:
        """Every retained state: the agent's, then each area's (published at start)."""
        return [self._state(None), *(self._state(a) for a in self._areas)]

    def save(self, *, force: bool = False) -> None:
        """Write the open excursions if anything changed (or ``force``)."""
        if self._file is None or not (force or self._tracker.dirty):
            return
        silenced = self._limiter.silenced if self._limiter is not None else frozenset()
        self._file.save(AlertState(self._tracker.snapshot(), tuple(sorted(silenced))))

    def counters(self) -> dict[str, int]:
        """For the status topic."""
        limiter = self._limiter
        suppressed = 0 if limiter is None else limiter.suppressed_total
        return {
            "notifications_total": self.notifications_total,
            "notifications_suppressed_total": suppressed,
            "excursions_open": len(self._tracker.open_all()),
        }

    def _state(self, area: str | None) -> Publish:
        found = self._tracker.open_all() if area is None else self._tracker.open_in(area)
        doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "area": area,
            "active": bool(found),
            "open": [_open_dict(e) for e in found],
        }
        return self._topics.area_alert(area), json.dumps(doc, ensure_ascii=False).encode()


def _open_dict(exc: Excursion) -> dict[str, Any]:
    return {
        "device": exc.device,
        "metric": exc.metric,
        "area": exc.area,
        "direction": exc.direction,
        "limit": exc.limit,
        "since": exc.started_at,
        "peak": round(exc.peak, 3),
        "last": round(exc.last, 3),
        "unit": exc.unit,
    }
