"""How long an ask and a digest hold the event loop, with N series in M areas.

The real :class:`Agent` (store, narrator, findings, grounding) with a model that answers
at once, so only the agent's own work is timed: the wall time of one ask and of one
digest, and the longest stretch the event loop could not run anything else (a task
that yields in a tight loop measures its own wake-up gaps). While the loop is held,
readings wait in the transport.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from edge_agent.anomalies import AnomalyDetector
from edge_agent.domain import AskRequest, Topics
from edge_agent.facts import WindowStore
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.narrator import Narrator, NarratorConfig
from edge_agent.service import Agent, AgentConfig, Route
from edge_agent.transport.base import Message
from edge_agent.worker import InferenceWorker

_NOW = 1000.0


@dataclass(frozen=True, slots=True)
class LoopResult:
    """Medians of one workload."""

    what: str
    series: int
    areas: int
    wall_ms: float
    stall_ms: float


class _InstantModel:
    """Answers every prompt at once with a plain sentence."""

    model_id = "instant"
    prompt_format: Literal["chat", "completion"] = "chat"
    context_length = 2048

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render(self, user: str) -> str:
        return f"<user>{user}</user>"

    def generate(self, request: GenerationRequest) -> Generation:
        return Generation("It is quiet.", 10, 3, "eos", 0.001)


class _NullTransport:
    """Takes publishes and drops them."""

    async def connect(self) -> None:
        return None

    async def messages(self) -> AsyncIterator[Message]:
        if False:
            yield Message("", b"")

    def publish(self, topic: str, payload: bytes | str, **kw: Any) -> None:
        return None

    async def close(self) -> None:
        return None


def _agent(series: int, areas: int) -> tuple[Agent, InferenceWorker]:
    worker = InferenceWorker(_InstantModel(), max_backlog=64)
    narrator = Narrator(worker, NarratorConfig(32, 32, 10.0))
    routes = tuple(
        Route.build(f"zigbee2mqtt/a{a}/#", "zigbee2mqtt", f"area{a}") for a in range(areas)
    )
    config = AgentConfig(
        Topics("b/summary", "b/deadletter", "b/anomaly", "b/ask", "b/answer"),
        window_s=600,
        interval_s=3600,
        max_payload_bytes=65536,
    )
    store = WindowStore(600, max_series=max(series, 1), max_devices=max(series, 1))
    agent = Agent(
        _NullTransport(), narrator, routes, config, store, AnomalyDetector(), lambda: _NOW
    )
    for i in range(series):
        reading = json.dumps({"temperature": 20 + (i % 7) * 0.3}).encode()
        agent.handle(Message(f"zigbee2mqtt/a{i % areas}/dev-{i:06d}", reading))
    return agent, worker


async def _stall(stop: asyncio.Event) -> float:
    worst, last = 0.0, time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    return worst


async def _measure(what: str, series: int, areas: int, repeats: int) -> LoopResult:
    agent, worker = _agent(series, areas)
    runner = asyncio.create_task(worker.run())
    walls, stalls = [], []
    try:
        for i in range(repeats + 1):  # the first warms caches and the model's prompt
            stop = asyncio.Event()
            watcher = asyncio.create_task(_stall(stop))
            await asyncio.sleep(0)
            started = time.perf_counter()
            if what == "digest":
                await agent.digest(_NOW)
            else:
                ask = AskRequest.from_payload(b"How warm is it?", default_reply_to="b/a", now=_NOW)
                await agent.answer(ask)
            wall = time.perf_counter() - started
            stop.set()
            stall = await watcher
            if i:
                walls.append(wall * 1000)
                stalls.append(stall * 1000)
    finally:
        runner.cancel()
    return LoopResult(what, series, areas, statistics.median(walls), statistics.median(stalls))


def bench_loop(series: int, areas: int, repeats: int = 5) -> list[LoopResult]:
    """An ask and a digest with 20 series (the peer) and with ``series`` in ``areas``."""
    out = []
    for n, m in ((20, 1), (series, areas)):
        for what in ("ask", "digest"):
            out.append(asyncio.run(_measure(what, n, m, repeats)))
    return out


def render(results: list[LoopResult]) -> str:
    """One line per workload, with the ratio to the same workload at 20 series."""
    peer = {r.what: r for r in results if r.series == 20}
    lines = []
    for r in results:
        base = peer[r.what]
        lines.append(
            f"{r.what:6s} {r.series:5d} series in {r.areas:3d} areas: wall {r.wall_ms:7.1f} ms "
            f"(x{r.wall_ms / max(base.wall_ms, 1e-3):.1f} of 20 series), longest event-loop "
            f"stall {r.stall_ms:6.1f} ms"
        )
    return "\n".join(lines)
