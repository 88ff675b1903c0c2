"""The retained status topic: version, model, uptime, rates, queue, outbox, decode speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from edge_agent import __version__
from edge_agent.domain import Status


class _Publish(Protocol):
    def __call__(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None: ...


class _Agent(Protocol):
    events_total: int
    deadletters_total: int
    asks_total: int
    retained: dict[str, bytes]

    @property
    def narrator_stats(self) -> tuple[int, int, float | None, str | None]: ...

    @property
    def intake_counters(self) -> dict[str, int]: ...


class StatusReporter:
    """Publishes a :class:`Status` every ``interval_s`` (retained, so late joiners see it)."""

    def __init__(
        self,
        publish: _Publish,
        topic: str,
        interval_s: float,
        *,
        model: str,
        agent: _Agent,
        queue_depth: Callable[[], int],
        outbox_size: Callable[[], int],
        backlog_counters: Callable[[], dict[str, int]],
        alert_counters: Callable[[], dict[str, int]] | None = None,
        backend: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        self._publish = publish
        self._topic = topic
        self._interval_s = interval_s
        self._model = model
        self._agent = agent
        self._queue_depth = queue_depth
        self._outbox_size = outbox_size
        self._backlog = backlog_counters
        self._alerts = alert_counters
        """Anomaly notifications sent and suppressed by the rate limits, open excursions."""
        self._backend = backend
        self._started = time.monotonic()
        self._last = (self._started, 0)
        self.fatal_error: str | None = None
        """Why the service is exiting (a main task died); wins over the narrator's error."""

    def snapshot(self) -> Status:
        """The current status; events/s is measured since the previous snapshot."""
        now = time.monotonic()
        events = self._agent.events_total
        then, before = self._last
        self._last = (now, events)
        grounded, fallbacks, tok_s, last_error = self._agent.narrator_stats
        return Status(
            version=__version__,
            model=self._model,
            uptime_s=now - self._started,
            events_per_s=(events - before) / (now - then) if now > then else 0.0,
            queue_depth=self._queue_depth(),
            outbox_size=self._outbox_size(),
            decode_tok_s=tok_s,
            last_error=self.fatal_error or last_error,
            counters={
                "events_total": events,
                "deadletters_total": self._agent.deadletters_total,
                "asks_total": self._agent.asks_total,
                "grounded_total": grounded,
                "fallbacks_total": fallbacks,
                **self._agent.intake_counters,
                **self._backlog(),
                **(self._alerts() if self._alerts is not None else {}),
            },
            backend=None if self._backend is None else self._backend(),
        )

    def publish_now(self) -> None:
        """Publish one status, retained; remembered for Home Assistant's birth replay."""
        payload = self.snapshot().to_payload()
        self._agent.retained[self._topic] = payload
        self._publish(self._topic, payload, retain=True)

    async def run(self) -> None:
        """Publish at start, then every ``interval_s``, until cancelled."""
        while True:
            self.publish_now()
            await asyncio.sleep(self._interval_s)
