"""One generation at a time, off the event loop, with a bounded and merging backlog.

Policy when requests pile up (a slow board, a long generation):
- a new request with the same key (e.g. the same area) replaces the pending one,
  because the newer window supersedes it: logged as ``backlog_merged``;
- a ``priority`` request (a person asking a question) is served before the others;
- when the backlog is full, the request that has waited longest (by arrival, whatever
  its priority) is dropped to make room: ``backlog_dropped``. A newer request is the
  more useful one, and an asker who waited longest is told first (``busy``).
Superseded or dropped requests resolve to ``None``.

On shutdown the running generation is asked to stop at its next token and awaited, so
the inference thread never outlives the event loop its text callbacks post to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from edge_agent.llm.base import Generation, GenerationRequest, Generator

log = structlog.get_logger(__name__)

_STOP_WAIT_S = 10.0
"""Longest wait at shutdown for the running generation; it stops at its next token,
so only a long prefill on a slow board comes near this. Well inside systemd's
TimeoutStopSec (30 s), with the broker's goodbye still to come."""


@dataclass(slots=True)
class _Job:
    key: str
    request: GenerationRequest
    future: asyncio.Future[Generation | None]
    seq: int
    """Arrival order: the lowest waiting ``seq`` is dropped when the backlog is full."""


class InferenceWorker:
    """Runs a :class:`Generator` on a dedicated thread, one request at a time."""

    def __init__(self, generator: Generator, max_backlog: int) -> None:
        self.generator = generator
        self._max_backlog = max_backlog
        self._pending: OrderedDict[str, _Job] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.merged = 0
        self.dropped = 0
        self._busy_since: float | None = None
        self._arrivals = itertools.count()
        self._closing = threading.Event()  # read by the inference thread
        self._running: Future[Generation] | None = None

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the one running)."""
        return len(self._pending)

    def healthy(self, max_busy_s: float) -> bool:
        """False when one generation has run for longer than ``max_busy_s``: it is stuck."""
        started = self._busy_since
        return started is None or time.monotonic() - started < max_busy_s

    def submit(
        self, key: str, request: GenerationRequest, *, priority: bool = False
    ) -> asyncio.Future[Generation | None]:
        """Queue ``request``; the future resolves to the generation, or None if superseded."""
        future: asyncio.Future[Generation | None] = asyncio.get_running_loop().create_future()
        if key in self._pending:
            self._pending.pop(key).future.set_result(None)
            self.merged += 1
            log.info("backlog_merged", key=key, merged_total=self.merged)
        elif len(self._pending) >= self._max_backlog:
            # Priority requests sit at the front, so the front is not the oldest.
            oldest = min(self._pending.values(), key=lambda job: job.seq)
            del self._pending[oldest.key]
            oldest.future.set_result(None)
            self.dropped += 1
            log.warning("backlog_dropped", key=oldest.key, dropped_total=self.dropped)
        request = dataclasses.replace(
            request, on_text=self._guard(request.on_text), cancelled=self._closing.is_set
        )
        self._pending[key] = _Job(key, request, future, next(self._arrivals))
        if priority:
            self._pending.move_to_end(key, last=False)
        self._wakeup.set()
        return future

    def _guard(self, sink: Callable[[str], None] | None) -> Callable[[str], None] | None:
        """``sink`` muted once the worker is closing: nothing is posted to a stopping loop."""
        if sink is None:
            return None
        closing = self._closing

        def guarded(delta: str) -> None:
            if not closing.is_set():
                sink(delta)

        return guarded

    async def run(self) -> None:
        """Serve the backlog until cancelled."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    _, job = self._pending.popitem(last=False)
                    self._busy_since = time.monotonic()
                    self._running = self._executor.submit(self.generator.generate, job.request)
                    try:
                        result = await asyncio.wrap_future(self._running)
                    except Exception as exc:  # one failed generation must not stop the worker
                        if not job.future.done():
                            job.future.set_exception(exc)
                        continue
                    finally:
                        self._busy_since = None
                    if not job.future.done():
                        job.future.set_result(result)
        finally:
            for job in self._pending.values():
                job.future.cancel()
            await self._stop_running()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _stop_running(self) -> None:
        """Ask the running generation to stop, and wait until its thread is done with it."""
        self._closing.set()
        running = self._running
        if running is None or running.done():
            return
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.wrap_future(running), _STOP_WAIT_S)
        if not running.done():
            log.warning("generation_still_running_at_shutdown", waited_s=_STOP_WAIT_S)
