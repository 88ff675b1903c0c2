"""The agent: broker messages -> typed events -> windows -> facts -> narration -> broker.

It talks only to the :class:`Transport` and the :class:`Narrator` it is given; parsing,
windows, anomalies, prompts and grounding are pure modules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from edge_agent.actions.engine import ActionsEngine
from edge_agent.anomalies import AnomalyDetector
from edge_agent.domain import (
    Anomaly,
    Answer,
    AskRequest,
    DeadLetter,
    Excursion,
    MetricFacts,
    Summary,
    Window,
)
from edge_agent.errors import PayloadError
from edge_agent.facts import WindowStore
from edge_agent.findings import Findings
from edge_agent.ingest import Payload, Source, SourceOptions, build_source
from edge_agent.narrator import Narrator
from edge_agent.prompts import PROMPT_VERSION
from edge_agent.transport.base import Message, Transport

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    """A subscription resolved to its adapter and parse context."""

    topic_filter: str
    source: Source

    @classmethod
    def build(
        cls,
        topic_filter: str,
        adapter: str,
        area: str | None,
        options: SourceOptions | None = None,
    ) -> Route:
        """Resolve an adapter name and its per-subscription options from config."""
        return cls(topic_filter, build_source(topic_filter, adapter, area, options))


@dataclass(frozen=True, slots=True)
class Topics:
    """Our own topics, all under ``<base>/<node_id>/``."""

    summary: str
    deadletter: str
    anomaly: str
    ask: str
    answer: str

    @property
    def stream(self) -> str:
        """Where tokens stream while a summary is generated."""
        return f"{self.summary}/stream"

    def area_summary(self, area: str) -> str:
        """The retained summary of one area."""
        return f"{self.summary}/{area}"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Plain values the agent needs, taken from settings by the app."""

    topics: Topics
    window_s: float
    interval_s: float
    max_payload_bytes: int
    anomaly_min_interval_s: float = 120.0
    stream: bool = True
    stream_expiry_s: int = 60
    language: str = "en"
    home: str = ""


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
    """Consumes messages; publishes dead letters, anomalies, summaries and answers."""

    def __init__(
        self,
        transport: Transport,
        narrator: Narrator,
        routes: tuple[Route, ...],
        config: AgentConfig,
        store: WindowStore,
        detector: AnomalyDetector,
        clock: Callable[[], float] = time.time,
        handlers: dict[str, Callable[[Message], None]] | None = None,
        actions: ActionsEngine | None = None,
        excursions: Callable[[str | None], Sequence[Excursion]] | None = None,
    ) -> None:
        self._transport = transport
        self._narrator = narrator
        self._routes = routes
        self._cfg = config
        self._store = store
        self._detector = detector
        self._clock = clock
        self._handlers = dict(handlers or {})
        """Exact topics handled elsewhere (e.g. Home Assistant's birth), checked first."""
        self._actions = actions
        self._excursions = excursions
        """The open threshold excursions of an area (the alert lifecycle), if wired."""
        self._tasks: set[asyncio.Task[object]] = set()
        self._last_anomaly_summary: dict[str | None, float] = {}
        self._names: set[str] = set()
        self.retained: dict[str, bytes] = {}
        """The last retained payload per topic, to re-publish after a Home Assistant birth."""
        self.events_total = 0
        self.deadletters_total = 0
        self.asks_total = 0

    @property
    def narrator_stats(self) -> tuple[int, int, float | None, str | None]:
        """(grounded, fallbacks, last decode tok/s, last error) for the status topic."""
        st = self._narrator.stats
        return st.grounded, st.fallbacks, st.last_decode_tok_s, st.last_error

    # --- intake -------------------------------------------------------------------

    async def run(self) -> None:
        """Ingest until the transport closes, narrating every ``interval_s``."""
        ticker = asyncio.create_task(self._tick(), name="summary-ticker")
        if self._actions is not None:  # expiry of pending proposals, periodic proposals
            self._spawn(self._actions.run(self._store.facts, self._cfg.window_s), "actions")
        try:
            async for message in self._transport.messages():
                self.handle(message)
        finally:
            ticker.cancel()
            for task in list(self._tasks):
                task.cancel()

    def handle(self, message: Message) -> None:
        """Dispatch one message; a bad one is dead-lettered, never raised."""
        handler = self._handlers.get(message.topic)
        if handler is not None:
            handler(message)
            return
        if message.topic == self._cfg.topics.ask:
            self._on_ask(message)
            return
        route = next(
            (r for r in self._routes if topic_matches(r.topic_filter, message.topic)), None
        )
        if route is None:
            return  # one of our own topics echoing back, or a filter overlap
        now = self._clock()
        try:
            events = route.source.parse(
                message.topic, Payload(message.payload, self._cfg.max_payload_bytes), now
            )
        except PayloadError as exc:
            self._dead_letter(message, exc.reason, exc.detail, now)
            return
        for event in events:
            self._store.add(event)
            self._names.add(event.device)
            if event.area:
                self._names.add(event.area)
            for anomaly in self._detector.check(event, self._store):
                self._on_anomaly(anomaly)
        self.events_total += len(events)

    def _dead_letter(self, message: Message, reason: str, detail: str, now: float) -> None:
        self.deadletters_total += 1
        log.warning(
            "payload_rejected",
            topic=message.topic,
            reason=reason,
            detail=detail,
            total=self.deadletters_total,
        )
        letter = DeadLetter(reason, detail, message.topic, message.payload, now)
        self._transport.publish(self._cfg.topics.deadletter, letter.to_payload())

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in one narration must not go unnoticed, nor stop the agent.
            self._narrator.stats.last_error = repr(task.exception())
            log.error("task_failed", task=task.get_name(), exc_info=task.exception())

    # --- triggers -----------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.interval_s)
            now = self._clock()
            for anomaly in self._detector.check_stale(self._store, now):
                self._on_anomaly(anomaly)
            self._spawn(self.digest(now), "digest")

    async def digest(self, now: float) -> Summary | None:
        """Every area's summary, then the whole-home one on ``summary``: a sentence per
        area with news, or "All quiet" (one area: that area's own summary)."""
        groups = self._store.facts_by_area(now)
        done = await asyncio.gather(
            *(self.summarise(area, facts, end=now, home=False) for area, facts in groups.items())
        )
        found = {area: self._area_findings(area, groups[area], now) for area in groups}
        if not found:
            return None
        published = [s for s in done if s is not None]
        if len(groups) == 1 and published:
            text, fallback, reason = (
                published[0].text,
                published[0].fallback,
                published[0].fallback_reason,
            )
            title = published[0].title
        else:
            texts = {s.area: (s.text, s.fallback, s.fallback_reason) for s in published}
            title, text, fallback, reason = self._narrator.home(found, texts)
        severities = [f.severity for f in found.values()]
        severity: Literal["info", "warning", "alert"] = next(
            (s for s in ("alert", "warning") if s in severities), "info"
        )
        home = Summary(
            title=title,
            text=text,
            window=Window(start=now - self._cfg.window_s, end=now),
            facts=tuple(f for facts in groups.values() for f in facts),
            model=self._narrator.model_id,
            latency_s=sum(s.latency_s for s in published),
            prompt_tokens=sum(s.prompt_tokens for s in published),
            new_tokens=sum(s.new_tokens for s in published),
            stop_reason="",
            area=None,
            fallback=fallback,
            fallback_reason=reason,
            severity=severity,
            prompt_version=PROMPT_VERSION,
        )
        self._publish_retained(self._cfg.topics.summary, home.to_payload())
        log.info("home_summary_published", areas=len(groups), severity=severity)
        return home

    def _area_findings(
        self, area: str | None, facts: tuple[MetricFacts, ...], end: float
    ) -> Findings:
        """One area's findings, with its open excursions and its baseline window."""
        excursions = self._excursions(area) if self._excursions is not None else ()
        # The longer window the store keeps for baselines: what "usual" means here.
        baseline = tuple(f for f in self._store.facts(end, 10 * 86_400.0) if f.area == area)
        return self._narrator.findings(
            facts, excursions=excursions, baseline=baseline, window_s=self._cfg.window_s
        )

    def _on_anomaly(self, anomaly: Anomaly) -> None:
        log.info(
            "anomaly",
            kind=anomaly.kind,
            device=anomaly.device,
            metric=anomaly.metric,
            value=anomaly.value,
        )
        self._transport.publish(self._cfg.topics.anomaly, anomaly.to_payload())
        now = self._clock()
        last = self._last_anomaly_summary.get(anomaly.area)
        if last is not None and now - last < self._cfg.anomaly_min_interval_s:
            return  # rate-limited: the event above already told subscribers
        self._last_anomaly_summary[anomaly.area] = now
        facts = self._store.facts_by_area(now).get(anomaly.area, ())
        self._spawn(
            self.summarise(anomaly.area, facts, end=now, anomalies=(anomaly,)),
            f"anomaly:{anomaly.area}",
        )

    async def summarise(
        self,
        area: str | None,
        facts: tuple[MetricFacts, ...],
        *,
        end: float,
        anomalies: tuple[Anomaly, ...] = (),
        home: bool | None = None,
    ) -> Summary | None:
        """Narrate one area's findings and publish the summary; None if superseded or empty.

        It goes to ``summary/<area>``; to the whole-home ``summary`` too when ``home`` (by
        default: for an alert, or readings without an area).
        """
        found = self._area_findings(area, facts, end)
        if not found.items:
            return None
        on_text = self._streamer(area) if self._cfg.stream else None
        narration = await self._narrator.summary(
            area, found, on_text=on_text, known_names=self._names
        )
        if narration is None:
            return None
        # An alert lasts as long as its condition: an open excursion, a level past its
        # limit or an alarm keeps every summary of the area at "alert".
        severity: Literal["info", "warning", "alert"] = "alert" if anomalies else found.severity
        shown = set(narration.fact_ids)
        summary = Summary(
            title=self._narrator.title(area, found),
            text=narration.text,
            window=Window(start=end - self._cfg.window_s, end=end),
            facts=tuple(f for f in facts if f.fact_id in shown),
            model=self._narrator.model_id,
            latency_s=narration.latency_s,
            prompt_tokens=narration.prompt_tokens,
            new_tokens=narration.new_tokens,
            stop_reason=narration.stop_reason,
            area=area,
            fallback=narration.fallback,
            fallback_reason=narration.reason,
            severity=severity,
            prompt_version=PROMPT_VERSION,
        )
        payload = summary.to_payload()
        if home if home is not None else (bool(anomalies) or area is None):
            self._publish_retained(self._cfg.topics.summary, payload)
        if area is not None:
            self._publish_retained(self._cfg.topics.area_summary(area), payload)
        log.info(
            "summary_published",
            area=area,
            findings=len(narration.findings),
            severity=severity,
            fallback=narration.fallback,
            reason=narration.reason,
            prompt_tokens=narration.prompt_tokens,
            new_tokens=narration.new_tokens,
            latency_s=round(narration.latency_s, 3),
            stop_reason=narration.stop_reason,
        )
        if anomalies and self._actions is not None and self._actions.config.on_anomaly:
            self._spawn(
                self._actions.propose(facts, summary.window, anomalies=anomalies),
                f"actions:{area}",
            )
        return summary

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        self.retained[topic] = payload
        self._transport.publish(topic, payload, retain=True)

    def _streamer(self, area: str | None) -> Callable[[str], None]:
        topic = self._cfg.topics.stream
        expiry = self._cfg.stream_expiry_s
        loop = asyncio.get_running_loop()

        def publish(delta: str) -> None:
            self._transport.publish(topic, delta.encode(), qos=0, expiry_s=expiry)

        def on_text(delta: str) -> None:
            # Called on the inference thread; the transport belongs to the event loop.
            loop.call_soon_threadsafe(publish, delta)

        return on_text

    # --- ask / answer -------------------------------------------------------------

    def _on_ask(self, message: Message) -> None:
        now = self._clock()
        try:
            request = AskRequest.from_payload(
                message.payload,
                default_reply_to=self._cfg.topics.answer,
                response_topic=message.response_topic,
                correlation_data=message.correlation_data,
                expiry_s=message.message_expiry_s,
                now=now,
            )
        except ValueError as exc:
            self._dead_letter(message, "bad_question", str(exc), now)
            return
        self.asks_total += 1
        self._spawn(self.answer(request), f"ask:{self.asks_total}")

    async def answer(self, request: AskRequest) -> Answer | None:
        """Answer from the current findings and publish to the asker's reply topic."""
        now = self._clock()
        facts = self._store.facts(now)
        if request.expires_at is not None and self._clock() > request.expires_at:
            log.info("ask_expired", id=request.id, reply_to=request.reply_to)
            return None
        excursions: list[Excursion] = []
        if self._excursions is not None:
            for area in dict.fromkeys(f.area for f in facts):
                excursions.extend(self._excursions(area))
        narration = await self._narrator.answer(
            request.question,
            facts,
            excursions=excursions,
            known_names=self._names,
            key=f"ask:{id(request)}",
        )
        if narration is None:
            return None
        if request.expires_at is not None and self._clock() > request.expires_at:
            log.info("ask_expired", id=request.id, reply_to=request.reply_to, after="generation")
            return None
        answer = Answer(
            request,
            narration.text,
            narration.fact_ids,
            self._narrator.model_id,
            narration.latency_s,
            narration.fallback,
            narration.reason,
        )
        expiry = None
        if request.expires_at is not None:
            expiry = max(1, int(request.expires_at - self._clock()))
        self._transport.publish(
            request.reply_to,
            answer.to_payload(),
            correlation_data=request.correlation_data,
            expiry_s=expiry,
        )
        log.info(
            "answer_published",
            id=request.id,
            reply_to=request.reply_to,
            fallback=narration.fallback,
            latency_s=round(narration.latency_s, 3),
        )
        return answer
