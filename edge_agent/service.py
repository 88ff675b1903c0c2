"""The agent: broker messages -> typed events -> windows -> facts -> narration -> broker.

It talks only to the :class:`Transport` and :class:`InferenceWorker` it is given, and
everything it computes is done by the pure modules (ingest, facts, narrate).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from edge_agent.domain import DeadLetter, Summary, Window
from edge_agent.errors import GenerationError, PayloadError
from edge_agent.facts import WindowStore
from edge_agent.ingest import ADAPTERS, Adapter, decode_json, topic_prefix
from edge_agent.llm.base import GenerationRequest
from edge_agent.narrate import PROMPT_VERSION, summary_prompt, summary_title
from edge_agent.transport.base import Message, Transport
from edge_agent.worker import InferenceWorker

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    """A subscription resolved to its adapter."""

    topic_filter: str
    adapter: Adapter
    prefix: str
    area: str | None

    @classmethod
    def build(cls, topic_filter: str, adapter: str, area: str | None) -> Route:
        """Resolve an adapter name from config."""
        return cls(topic_filter, ADAPTERS[adapter], topic_prefix(topic_filter), area)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Plain values the agent needs, taken from settings by the app."""

    summary_topic: str
    deadletter_topic: str
    window_s: float
    interval_s: float
    max_new_tokens: int
    deadline_s: float
    max_payload_bytes: int


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard matching (``+`` one level, ``#`` the rest)."""
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


class Agent:
    """Consumes messages and publishes summaries and dead letters."""

    def __init__(
        self,
        transport: Transport,
        worker: InferenceWorker,
        routes: tuple[Route, ...],
        config: AgentConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transport = transport
        self._worker = worker
        self._routes = routes
        self._cfg = config
        self._clock = clock
        self._store = WindowStore(config.window_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self.events_total = 0
        self.deadletters_total = 0

    async def run(self) -> None:
        """Ingest until the transport closes, narrating every ``interval_s``."""
        ticker = asyncio.create_task(self._tick(), name="summary-ticker")
        try:
            async for message in self._transport.messages():
                self.handle(message)
        finally:
            ticker.cancel()
            for task in self._tasks:
                task.cancel()

    def handle(self, message: Message) -> None:
        """Parse one message into the windows, or dead-letter it with the reason."""
        route = next((r for r in self._routes if topic_matches(r.topic_filter, message.topic)), None)
        if route is None:
            return  # one of our own topics echoing back, or a filter overlap
        now = self._clock()
        try:
            doc = decode_json(message.payload, self._cfg.max_payload_bytes)
            events = route.adapter(message.topic, doc, route.prefix, route.area, now)
        except PayloadError as exc:
            self._dead_letter(message, exc, now)
            return
        self._store.add_all(events)
        self.events_total += len(events)

    def _dead_letter(self, message: Message, exc: PayloadError, now: float) -> None:
        self.deadletters_total += 1
        log.warning("payload_rejected", topic=message.topic, reason=exc.reason,
                    detail=exc.detail, total=self.deadletters_total)
        letter = DeadLetter(exc.reason, exc.detail, message.topic, message.payload, now)
        self._transport.publish(self._cfg.deadletter_topic, letter.to_payload())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.interval_s)
            task = asyncio.create_task(self.summarise())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def summarise(self) -> Summary | None:
        """Narrate the current window and publish it; None if there is nothing to say."""
        end = self._clock()
        facts = self._store.facts(end)
        if not facts:
            return None
        generator = self._worker.generator
        prompt = generator.render(summary_prompt(facts, self._cfg.window_s))
        request = GenerationRequest(prompt, self._cfg.max_new_tokens, self._cfg.deadline_s)
        try:
            result = await self._worker.submit("all", request)
        except GenerationError as exc:
            log.error("summary_failed", error=str(exc))
            return None
        if result is None:
            return None  # superseded by a newer window
        summary = Summary(
            title=summary_title(facts),
            text=result.text.strip(),
            window=Window(start=end - self._cfg.window_s, end=end),
            facts=facts,
            model=generator.model_id,
            latency_s=result.latency_s,
            prompt_tokens=result.prompt_tokens,
            new_tokens=result.new_tokens,
            stop_reason=result.stop_reason,
        )
        self._transport.publish(self._cfg.summary_topic, summary.to_payload(), retain=True)
        log.info(
            "summary_published", facts=len(facts), prompt_version=PROMPT_VERSION,
            prompt_tokens=result.prompt_tokens, new_tokens=result.new_tokens,
            latency_s=round(result.latency_s, 3), stop_reason=result.stop_reason,
            tok_per_s=round(result.new_tokens / result.latency_s, 1) if result.latency_s else None,
        )
        return summary
