"""One generation at a time, off the event loop, with a bounded and merging backlog.

Policy when requests pile up (a slow board, a long generation):
- a new request with the same key (e.g. the same area) replaces the pending one,
  because the newer window supersedes it: logged as ``backlog_merged``;
- when the backlog is full, the oldest pending request is dropped: ``backlog_dropped``;
- a ``priority`` request (a person asking a question) goes to the front of the queue.
Superseded or dropped requests resolve to ``None``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from edge_agent.llm.base import Generation, GenerationRequest, Generator

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Job:
    key: str
    request: GenerationRequest
    future: asyncio.Future[Generation | None]


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
            old_key, oldest = self._pending.popitem(last=False)
            oldest.future.set_result(None)
            self.dropped += 1
            log.warning("backlog_dropped", key=old_key, dropped_total=self.dropped)
        self._pending[key] = _Job(key, request, future)
        if priority:
            self._pending.move_to_end(key, last=False)
        self._wakeup.set()
        return future

    async def run(self) -> None:
        """Serve the backlog until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    _, job = self._pending.popitem(last=False)
                    self._busy_since = time.monotonic()
                    try:
                        result = await loop.run_in_executor(
                            self._executor, self.generator.generate, job.request
                        )
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
            self._executor.shutdown(wait=False, cancel_futures=True)
