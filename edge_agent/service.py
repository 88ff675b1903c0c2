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
from edge_agent.actions.reply_guard import (
    FORBIDDEN_REASON,
    ReplyRules,
    forbidden_reply,
    topic_matches,
)
from edge_agent.alerts import Alerts
from edge_agent.anomalies import AnomalyDetector
from edge_agent.domain import (
    Anomaly,
    Answer,
    AskRequest,
    DeadLetter,
    Excursion,
    ExplainedChange,
    MetricFacts,
    Summary,
    Topics,
    Window,
)
from edge_agent.errors import PayloadError
from edge_agent.facts import WindowStore
from edge_agent.findings import Findings
from edge_agent.ingest import Payload, Source, SourceOptions, build_source
from edge_agent.ingest.limits import check_clean, check_depth, clean
from edge_agent.ingest.timing import TimePolicy
from edge_agent.narrator import Narrator
from edge_agent.prompts import PROMPT_VERSION
from edge_agent.results import record
from edge_agent.scope import AskScope
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
    late_after_s: float = 30.0
    max_clock_skew_s: float = 60.0


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
        alerts: Alerts | None = None,
        excursions: Callable[[str | None], Sequence[Excursion]] | None = None,
        explained: Callable[[str | None], Sequence[ExplainedChange]] | None = None,
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
        self._alerts = alerts
        """Rate limits, "alert active" states and saved excursions; None: publish all."""
        self._excursions = excursions
        """The open threshold excursions of an area (the alert lifecycle), if wired."""
        self._explained = explained
        """Level changes of an area that a state change explained (findings, not anomalies)."""
        self._tasks: set[asyncio.Task[object]] = set()
        self._task_error: tuple[float, str] | None = None
        """(monotonic time, repr) of the last narration task that died of a bug."""
        self._last_anomaly_summary: dict[str | None, float] = {}
        self._names = store.names
        # An ask takes the series its question names (bounded), not all of them.
        self._scope = AskScope(store, narrator.names, excursions=excursions, explained=explained)
        self._timing = TimePolicy(
            late_after_s=config.late_after_s,
            max_skew_s=config.max_clock_skew_s,
            max_age_s=store.horizon_s,
        )
        self._error_kinds: dict[str, int] = {}
        """Messages that failed per exception type: the first is logged with a traceback."""
        self.retained: dict[str, bytes] = {}
        """The last retained payload per topic, to re-publish after a Home Assistant birth."""
        self.events_total = 0
        self.deadletters_total = 0
        self.asks_total = 0
        self.ask_errors_total = 0
        """Asks answered with an error payload (busy, expired, internal_error)."""

        self.ignored_total = 0
        self.internal_errors_total = 0

    @property
    def alert_counters(self) -> dict[str, int]:
        """Notifications sent and suppressed, open excursions (for the status topic)."""
        return {} if self._alerts is None else self._alerts.counters()

    @property
    def intake_counters(self) -> dict[str, int]:
        """Counters of the intake path for the status topic."""
        return {
            "ignored_total": self.ignored_total,
            "internal_errors_total": self.internal_errors_total,
            "series_total": self._store.series_count,
            "series_refused_total": self._store.refused_total,
            "series_pruned_total": self._store.pruned_total,
        }

    @property
    def narrator_stats(self) -> tuple[int, int, float | None, str | None]:
        """(grounded, fallbacks, last decode tok/s, last error) for the status topic."""
        st = self._narrator.counters()
        error = st.last_error
        if self._task_error is not None and self._task_error[0] >= st.last_error_at:
            error = self._task_error[1]  # the newer of a failed task and a failed narration
        return st.grounded, st.fallbacks, st.last_decode_tok_s, error

    # --- intake -------------------------------------------------------------------

    async def run(self) -> None:
        """Ingest until the transport closes, narrating every ``interval_s``."""
        ticker = asyncio.create_task(self._tick(), name="summary-ticker")
        if self._actions is not None:  # expiry of pending proposals, periodic proposals
            self._spawn(self._actions.run(self._store.facts, self._cfg.window_s), "actions")
        if self._alerts is not None:  # restored excursions: Home Assistant sees them at once
            for topic, payload in self._alerts.states():
                self._publish_retained(topic, payload)
        try:
            async for message in self._transport.messages():
                self.handle(message)
        finally:
            if self._alerts is not None:
                self._alerts.save()
            ticker.cancel()
            for task in list(self._tasks):
                task.cancel()

    def handle(self, message: Message) -> None:
        """Dispatch one message in isolation; a bad one is dead-lettered, never raised.

        Whatever fails while handling it (an adapter, the windows, a detector, a
        handler, publishing) ends here as an ``internal_error`` dead letter, so intake
        goes on and the transport acknowledges the message when the next is asked for.
        """
        try:
            self._dispatch(message)
        except Exception as exc:  # one message must never stop intake
            self._internal_error(message, exc)

    def _internal_error(self, message: Message, exc: Exception) -> None:
        """Count, log (the traceback once per exception type) and dead-letter a failure."""
        self.internal_errors_total += 1
        kind = type(exc).__name__
        seen = self._error_kinds[kind] = self._error_kinds.get(kind, 0) + 1
        try:
            detail = f"{kind}: {clean(str(exc))[:300]}"
        except Exception:  # a broken __str__ must not escape either
            detail = kind
        topic = clean(message.topic)
        if seen == 1:
            log.error("message_failed", topic=topic, error=kind, exc_info=exc)
        else:
            log.warning("message_failed", topic=topic, error=kind, count=seen)
        try:
            self._dead_letter(message, "internal_error", detail, self._clock())
        except Exception as again:  # e.g. the transport itself is failing
            log.error("deadletter_failed", topic=topic, error=type(again).__name__)

    def _dispatch(self, message: Message) -> None:
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
            parsed = route.source.read(
                message.topic, Payload(message.payload, self._cfg.max_payload_bytes), now
            )
            events = self._timing.apply(parsed.events, now, retained=message.retain)
        except PayloadError as exc:
            self._dead_letter(message, exc.reason, exc.detail, now)
            return
        if parsed.ignored is not None:
            self.ignored_total += 1
            return
        refused = 0
        for event in events:
            if not self._store.add(event):
                refused += 1
                continue
            for anomaly in self._detector.check(event, self._store):
                self._on_anomaly(anomaly)
        self.events_total += len(events) - refused
        if parsed.rejected:
            self._dead_letter(message, "wrong_type_fields", "; ".join(parsed.rejected), now)
        if refused:
            self._dead_letter(
                message,
                "too_many_series",
                f"{refused} new series refused: the windows hold {self._store.series_count} "
                "series (facts.max_series) of at most facts.max_devices devices",
                now,
            )

    def _dead_letter(self, message: Message, reason: str, detail: str, now: float) -> None:
        self.deadletters_total += 1
        # Details quote the payload: no lone surrogate may reach the log or json.dumps.
        detail, topic = clean(detail), clean(message.topic)
        record(
            log.warning,
            "payload_rejected",
            topic=topic,
            reason=reason,
            detail=detail,
            total=self.deadletters_total,
        )
        letter = DeadLetter(reason, detail, topic, message.payload, now)
        # QoS 0: a diagnostic. At QoS 1 a flood of bad input (100k distinct names) piles
        # up unacknowledged dead letters in memory and in the outbox, ahead of real news.
        self._transport.publish(self._cfg.topics.deadletter, letter.to_payload(), qos=0)

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        try:
            task: asyncio.Task[object] = asyncio.create_task(coro, name=name)
        except RuntimeError:  # no running loop: the coroutine must not leak unawaited
            coro.close()
            raise
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in one narration must not go unnoticed, nor stop the agent.
            self._task_error = (time.monotonic(), repr(task.exception()))
            log.error("task_failed", task=task.get_name(), exc_info=task.exception())

    # --- triggers -----------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.interval_s)
            try:
                self._tick_once()
            except Exception as exc:  # one bad tick must not end digests
                log.error("tick_failed", error=type(exc).__name__, exc_info=exc)

    def _tick_once(self) -> None:
        now = self._clock()
        for anomaly in self._detector.check_stale(self._store, now):
            self._on_anomaly(anomaly)
        if self._alerts is not None:
            self._alerts.save()  # a peak that rose since the last lifecycle step
        self._spawn(self.digest(now), "digest")

    async def digest(self, now: float) -> Summary | None:
        """Every area's summary, then the whole-home one on ``summary``: a sentence per
        area with news, or "All quiet" (one area: that area's own summary)."""
        groups: dict[str | None, tuple[MetricFacts, ...]] = {}
        found: dict[str | None, Findings] = {}
        for area in self._store.areas:
            # One area per step of the event loop, and its findings (pure, the costly
            # part) in a thread, made once: intake goes on meanwhile, and no step of the
            # loop costs more than reading one area's series.
            facts = self._store.area_facts(area, now)
            if facts:
                groups[area] = facts
                await asyncio.sleep(0)  # its baseline window is read in a step of its own
                inputs = self._finding_inputs(area, now)
                found[area] = await asyncio.to_thread(self._narrator.findings, facts, **inputs)
            await asyncio.sleep(0)
        done = await asyncio.gather(
            *(
                self.summarise(area, facts, end=now, home=False, found=found[area])
                for area, facts in groups.items()
            )
        )
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
        # Every fact of every area: encoded in a thread (pure), not on the event loop.
        self._publish_retained(self._cfg.topics.summary, await asyncio.to_thread(home.to_payload))
        log.info("home_summary_published", areas=len(groups), severity=severity)
        return home

    def _area_findings(
        self, area: str | None, facts: tuple[MetricFacts, ...], end: float
    ) -> Findings:
        """One area's findings, with its open excursions and its baseline window."""
        return self._narrator.findings(facts, **self._finding_inputs(area, end))

    def _finding_inputs(self, area: str | None, end: float) -> dict[str, Any]:
        """What an area's findings are made from besides its facts: open excursions,
        explained changes and the baseline window. Read on the event loop: the detector
        and the store belong to it (findings themselves are pure)."""
        excursions = self._excursions(area) if self._excursions is not None else ()
        explained = self._explained(area) if self._explained is not None else ()
        # The longer window the store keeps for baselines: what "usual" means here.
        baseline = self._store.area_facts(area, end, 10 * 86_400.0)
        return {
            "excursions": excursions,
            "baseline": baseline,
            "window_s": self._cfg.window_s,
            "explained": explained,
        }

    def _on_anomaly(self, anomaly: Anomaly) -> None:
        self._scope.note(anomaly.device, anomaly.metric)  # news for the next asks
        if self._alerts is not None:
            kept, states = self._alerts.on_anomaly(anomaly)
            for topic, payload in states:
                self._publish_retained(topic, payload)
            if kept is None:
                return  # rate-limited; counted on status
            anomaly = kept  # notify=False when only its notification is held back
        log.info(
            "anomaly",
            kind=anomaly.kind,
            phase=anomaly.phase,
            device=anomaly.device,
            metric=anomaly.metric,
            value=anomaly.value,
        )
        self._transport.publish(self._cfg.topics.anomaly, anomaly.to_payload())
        if anomaly.phase in ("reminder", "resolved"):
            return  # only a start (or a one-off anomaly) asks for a summary
        now = self._clock()
        last = self._last_anomaly_summary.get(anomaly.area)
        if last is not None and now - last < self._cfg.anomaly_min_interval_s:
            return  # rate-limited: the event above already told subscribers
        self._last_anomaly_summary[anomaly.area] = now
        facts = self._store.area_facts(anomaly.area, now)
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
        found: Findings | None = None,
    ) -> Summary | None:
        """Narrate one area's findings and publish the summary; None if superseded or empty.

        It goes to ``summary/<area>``; to the whole-home ``summary`` too when ``home`` (by
        default: for an alert, or readings without an area). ``found``: the area's
        findings when the caller already made them.
        """
        if found is None:
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
        record(
            log.info,
            "summary_published",
            area=area,
            facts=len(summary.facts),
            findings=len(narration.findings),
            severity=severity,
            outcome="fallback" if narration.fallback else "grounded",
            fallback=narration.fallback,
            reason=narration.reason,
            prompt_tokens=narration.prompt_tokens,
            new_tokens=narration.new_tokens,
            latency_s=round(narration.latency_s, 3),
            stop_reason=narration.stop_reason,
            model=summary.model,
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
        if message.retain:
            # A retained question would be answered again at every (re)subscribe.
            log.warning("ask_ignored", reason="retained", topic=message.topic)
            if self._actions is not None:
                self._actions.record_ignored("ask", message, "retained")
            return
        try:
            # Depth before decoding, surrogates after: a 10,000-deep {"q": [[[... or a
            # "\ud800" question must not reach the JSON decoder or the tokenizer.
            check_depth(message.payload.decode("utf-8", "replace"))
            request = AskRequest.from_payload(
                message.payload,
                default_reply_to=self._cfg.topics.answer,
                response_topic=message.response_topic,
                correlation_data=message.correlation_data,
                expiry_s=message.message_expiry_s,
                now=now,
            )
            check_clean(request.question, request.reply_to, request.id or "")
        except PayloadError as exc:
            self._dead_letter(message, exc.reason, exc.detail, now)
            return
        except ValueError as exc:
            self._dead_letter(message, "bad_question", str(exc), now)
            return
        why = forbidden_reply(request.reply_to, self._reply_rules())
        if why is not None:
            detail = f"reply_to {request.reply_to[:200]!r}: {why}"
            self._dead_letter(message, FORBIDDEN_REASON, detail, now)
            return
        self.asks_total += 1
        self._spawn(self._answer_or_error(request), f"ask:{self.asks_total}")

    async def _answer_or_error(self, request: AskRequest) -> Answer | None:
        """:meth:`answer`, and an ``internal_error`` reply if it fails (then raised on)."""
        try:
            return await self.answer(request)
        except Exception:
            self._reply_error(request, "internal_error")
            raise

    def _reply_error(self, request: AskRequest, error: str) -> None:
        """The one reply of an ask that gets no answer: ``{"id", "error"}``."""
        self.ask_errors_total += 1
        log.info("ask_error_replied", id=request.id, reply_to=request.reply_to, error=error)
        self._transport.publish(
            request.reply_to,
            request.error_payload(error),
            correlation_data=request.correlation_data,
        )

    def _reply_rules(self) -> ReplyRules:
        """Everything we read or command: an answer may land on none of it."""
        own = self._cfg.topics.answer.rsplit("/", 2)[0]
        handled = tuple(self._handlers)
        return ReplyRules.build(
            answer_topic=self._cfg.topics.answer,
            subscribed=(*(r.topic_filter for r in self._routes), self._cfg.topics.ask, *handled),
            command_templates=self._actions.command_templates if self._actions else (),
            # An exact topic handled outside our namespace (Home Assistant's status):
            # its namespace (the discovery prefix) is reserved as a whole.
            reserved_roots=tuple(t.rsplit("/", 1)[0] for t in handled if not t.startswith(own)),
        )

    async def answer(self, request: AskRequest) -> Answer | None:
        """Answer from the current facts and publish to the asker's reply topic.

        Every request gets exactly one reply: the answer, or an error payload, ``busy``
        when a full backlog dropped it, ``expired`` when its message expiry passed first.
        """
        now = self._clock()
        if request.expires_at is not None and self._clock() > request.expires_at:
            log.info("ask_expired", id=request.id, reply_to=request.reply_to)
            self._reply_error(request, "expired")
            return None
        material = self._scope.material(request.question, now)
        facts = material.facts
        narration = await self._narrator.answer(
            request.question,
            facts,
            excursions=material.excursions,
            known_names=self._names,
            key=f"ask:{id(request)}",
            explained=material.explained,
        )
        if narration is None:  # dropped from a full backlog
            self._reply_error(request, "busy")
            return None
        if request.expires_at is not None and self._clock() > request.expires_at:
            log.info("ask_expired", id=request.id, reply_to=request.reply_to, after="generation")
            self._reply_error(request, "expired")
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
        record(
            log.info,
            "answer_published",
            id=request.id,
            reply_to=request.reply_to,
            facts=len(facts),
            outcome="fallback" if narration.fallback else "grounded",
            fallback=narration.fallback,
            reason=narration.reason,
            prompt_tokens=narration.prompt_tokens,
            new_tokens=narration.new_tokens,
            latency_s=round(narration.latency_s, 3),
            stop_reason=narration.stop_reason,
            model=answer.model,
        )
        return answer
