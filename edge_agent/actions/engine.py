"""The actions engine: asks the model for a proposal, lets the policy decide, carries out.

I/O-light: it publishes through the function it is given, generates through the
worker's ``submit``, reads the clock it is given and writes the audit log. Modes:
``propose`` publishes only; ``confirm`` waits for ``.../action/approve`` naming the
proposal (``{"action_id": ...}``, or ``PRESS`` when it is the only one pending and has
been shown long enough) until it expires; ``auto`` runs at once, but only while its
``when`` condition holds over the facts and the grammar did not overrule the model;
otherwise it waits for approval like ``confirm``. Pending proposals are published,
retained, on ``.../action/pending``; every refused approval is an event and an audit row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import structlog

from edge_agent.actions.approval import (
    ApprovalRequest,
    Origin,
    Refusal,
    RefusedApproval,
    parse_approval,
)
from edge_agent.actions.audit import AuditLog
from edge_agent.actions.constrain import JsonConstraint, WarmStats
from edge_agent.actions.pending import Pending, PendingBoard, PendingBook
from edge_agent.actions.policy import Candidate, History, Policy, auto_hold, parse_output
from edge_agent.actions.prompt import PROMPT_VERSION, proposal_prompt
from edge_agent.actions.types import NO_ACTION, ActionEvent, ActionEventType, Code, Proposal
from edge_agent.domain import Anomaly, MetricFacts, Window
from edge_agent.errors import EdgeAgentError, GenerationError
from edge_agent.llm.base import Generation, GenerationRequest, Generator
from edge_agent.narrator import fit_request
from edge_agent.prompts import Prompt
from edge_agent.results import record
from edge_agent.settings import ActionSpec
from edge_agent.templates import render
from edge_agent.transport.base import Message

log = structlog.get_logger(__name__)
_MIN_FACT_TOKENS = 96

Submit = Callable[[str, GenerationRequest], Awaitable[Generation | None]]
_LOG_EVENTS = {k: f"action_{k}" for k in ("proposed", "performed", "rejected", "expired", "failed")}


class Publish(Protocol):
    """``Transport.publish``, as far as the engine uses it."""

    def __call__(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Queue one publish."""
        ...


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Plain values from the actions settings."""

    event_topic: str
    max_new_tokens: int = 192
    deadline_s: float = 60.0
    on_anomaly: bool = True
    interval_s: float = 0.0
    pending_topic: str = ""
    """Retained list of pending proposals; empty: not published."""
    press_min_display_s: float = 3.0
    """A bare PRESS applies only to a proposal pending at least this long."""


class ActionsEngine:
    """Proposals in, decisions and commands out; one instance per process."""

    def __init__(
        self,
        config: EngineConfig,
        policy: Policy,
        audit: AuditLog,
        publish: Publish,
        generator: Generator,
        submit: Submit,
        constraint: JsonConstraint,
        clock: Callable[[], float],
        *,
        warmup: Future[WarmStats] | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self._audit = audit
        self._publish = publish
        self._generator = generator
        self._submit = submit
        self._constraint = constraint
        self._clock = clock
        self.warmup = warmup
        """The start-up mask warm-up, when one was started (see ``wiring``)."""
        self.history = History()
        board = PendingBoard(publish, config.pending_topic, config.press_min_display_s)
        self._book = PendingBook(board, config.press_min_display_s)
        self.pending = self._book.items
        """Proposals awaiting approval, oldest first."""
        now = clock()
        for action, device, ts in audit.performed_since(now - 3600.0):
            self.history.record(action, device, ts)  # rate limits survive a restart
        for ident in audit.expire_orphans(now):
            log.warning("action_expired_at_restart", action_id=ident)
        for spec in policy.specs.values():
            if spec.mode == "auto" and spec.when is None:
                log.warning("action_auto_without_condition", action=spec.id, acts_as="confirm")

    @property
    def command_templates(self) -> tuple[str, ...]:
        """Topic templates of the allowlisted actions: never a reply topic."""
        return tuple(s.topic for s in self.policy.specs.values())

    # --- proposals ------------------------------------------------------------------

    async def propose(
        self,
        facts: Sequence[MetricFacts],
        window: Window,
        *,
        anomalies: Sequence[Anomaly] = (),
    ) -> ActionEvent | None:
        """Ask the model for one proposal over ``facts`` and decide on it.

        Returns the last event (None for "no action" or a superseded request).
        """
        if not any(s.mode != "off" for s in self.policy.specs.values()):
            return None
        gen = self._generator
        specs = tuple(self.policy.specs.values())

        examples = True

        def build(subset: Sequence[MetricFacts]) -> Prompt:
            return proposal_prompt(
                subset, specs, style=gen.prompt_format, anomalies=anomalies, examples=examples
            )

        # The most relevant facts that fit beside the allowlist and the answer.
        fixed = gen.count_tokens(gen.render(build(()).text))
        if gen.context_length - self.config.max_new_tokens - fixed < _MIN_FACT_TOKENS:
            # A small context: the worked examples go first.
            examples = False
            log.warning("action_examples_dropped", context=gen.context_length, prompt=fixed)
        first = [f"{a.device}.{a.metric}" for a in anomalies]
        _, prompt = fit_request(
            gen, facts, build, max_new_tokens=self.config.max_new_tokens, first=first
        )
        full = gen.render(prompt.text)
        # The grammar must close within the tokens the runtime will really allow.
        budget = min(self.config.max_new_tokens, gen.context_length - gen.count_tokens(full))
        processor = self._constraint.processor(budget)
        request = GenerationRequest(
            prompt=full,
            max_new_tokens=budget,
            deadline_s=self.config.deadline_s,
            # The static head is trusted text the runtime never rewrites: find it, not
            # the whole text (untrusted spans in it may be escaped by the runtime).
            prefix_chars=max(full.find(prompt.static) + len(prompt.static), 0),
            logits_processor=processor,
        )
        started = self._clock()
        try:
            result = await self._submit("actions", request)
        except GenerationError as exc:
            log.error("action_generation_failed", error=str(exc))
            blank = self._proposal(None, "", window, started)
            failed = self._emit("failed", blank, "", Code.GENERATION_FAILED, str(exc), facts=facts)
            record(
                log.info,
                "action_decided",
                area=anomalies[0].area if anomalies else None,
                facts=len(facts),
                outcome="failed",
                reason=getattr(exc, "reason", "error"),
                latency_s=round(self._clock() - started, 3),
                model=gen.model_id,
            )
            return failed
        if result is None:
            return None
        event = self.decide(result.text, facts, window, forced=processor.forced)
        # The canonical line of this decision (metrics count it; see edge_agent.results).
        record(
            log.info,
            "action_decided",
            area=anomalies[0].area if anomalies else None,
            facts=len(facts),
            outcome=event.event_type if event else "none",
            action=event.proposal.describe() if event else "",
            reason=event.code if event else "",
            prompt_tokens=result.prompt_tokens,
            new_tokens=result.new_tokens,
            latency_s=round(result.latency_s, 3),
            model=gen.model_id,
        )
        return event

    def decide(
        self, text: str, facts: Sequence[MetricFacts], window: Window, *, forced: bool = False
    ) -> ActionEvent | None:
        """Validate the model's ``text`` and act on it by the action's mode.

        ``forced``: the constrained decoder overrode the model's choice of action,
        device or value, so the proposal is not what the model asked for.
        """
        now = self._clock()
        doc, verdict = parse_output(text)
        cand: Candidate | None = None
        if verdict.ok:
            # No 'pending' here: a new proposal for a pending action supersedes it.
            cand, verdict = self.policy.validate(
                doc, devices={f.device for f in facts}, history=self.history, now=now
            )
        proposal = self._proposal(cand, text, window, now, doc)
        spec = self.policy.specs.get(proposal.action)
        mode = spec.mode if spec else ""
        if cand is not None and cand.action == NO_ACTION:
            event = ActionEvent("rejected", proposal, now, mode)
            self._audit.record(event, kind="no_action", facts=facts)
            log.info("action_none", reason=proposal.reason)
            return None
        if not verdict.ok or spec is None:
            return self._emit("rejected", proposal, mode, verdict.code, verdict.detail, facts=facts)
        held = ""
        if spec.mode == "auto":
            held, met = auto_hold(spec, facts, forced=forced)
            if not held:
                event = self._emit("proposed", proposal, mode, facts=facts)
                return self._execute(proposal, spec, {"by": "policy", "condition": met})
        if spec.mode == "propose":
            event = self._emit("proposed", proposal, mode, facts=facts)
            self.history.record(proposal.action, proposal.device, now)  # notify once
            return event
        for ident, old in list(self.pending.items()):
            if old.proposal.action == proposal.action:
                del self.pending[ident]
                detail = f"superseded by {proposal.id}"
                self._emit("rejected", old.proposal, old.mode, Code.SUPERSEDED, detail)
                self._book.close(ident, Refusal.SUPERSEDED)
        expires = now + spec.confirm_expiry_s
        self.pending[proposal.id] = Pending(
            proposal, expires, frozenset(f.device for f in facts), "confirm"
        )
        event = self._emit(
            "proposed", proposal, "confirm", detail=held, expires_at=expires, facts=facts
        )
        self._book.show(now)
        return event

    # --- approval -------------------------------------------------------------------

    def on_approve(self, message: Message) -> ActionEvent | None:
        """Run the pending proposal the message names (see :mod:`.approval`)."""
        found = self._resolve(parse_approval("approve", message))
        if found is None:
            return None
        ident, pending, request = found
        now = self._clock()
        del self.pending[ident]
        self._book.show(now)
        p = pending.proposal
        cand = Candidate(p.action, p.device, p.params, p.reason)
        verdict = self.policy.context(cand, devices=pending.devices, history=self.history, now=now)
        spec = self.policy.specs[p.action]
        origin = request.origin.to_dict()
        if not verdict.ok:
            return self._emit(
                "rejected", p, pending.mode, verdict.code, verdict.detail, origin=origin
            )
        return self._execute(p, spec, origin, mode=pending.mode)

    def on_reject(self, message: Message) -> ActionEvent | None:
        """Drop the pending proposal the message names (same rules as approve)."""
        found = self._resolve(parse_approval("reject", message))
        if found is None:
            return None
        ident, pending, request = found
        del self.pending[ident]
        self._book.show(self._clock())
        return self._emit(
            "rejected",
            pending.proposal,
            pending.mode,
            Code.USER_REJECTED,
            "rejected",
            origin=request.origin.to_dict(),
        )

    def record_ignored(self, what: str, message: Message, reason: str) -> None:
        """Audit a message the service ignored (e.g. a retained question on ``ask``)."""
        self._audit.record_message(
            "ignored",
            self._clock(),
            code=reason,
            detail=f"{what} ignored",
            origin=Origin.of(message).to_dict(),
        )

    def handlers(self, *, approve: str, reject: str) -> dict[str, Callable[[Message], None]]:
        """The service's topic handlers for the approve and reject topics."""

        def on_approve(message: Message) -> None:
            self.on_approve(message)

        def on_reject(message: Message) -> None:
            self.on_reject(message)

        return {approve: on_approve, reject: on_reject}

    def tick(self, now: float) -> list[ActionEvent]:
        """Expire every pending proposal whose time is up."""
        due = [i for i, p in self.pending.items() if now >= p.expires_at]
        events = [e for i in due if (e := self._expire(i, now)) is not None]
        if events:
            self._book.show(now)
        return events

    async def run(
        self, facts: Callable[[float], Sequence[MetricFacts]], window_s: float, every_s: float = 1.0
    ) -> None:
        """Expire pending proposals, and propose every ``interval_s`` if set; until cancelled."""
        last = self._clock()
        self._book.show(last)  # clears a previous run's list
        while True:
            await asyncio.sleep(every_s)
            now = self._clock()
            self.tick(now)
            if self.config.interval_s and now - last >= self.config.interval_s:
                last = now
                await self.propose(facts(now), Window(now - window_s, now))

    # --- internals ------------------------------------------------------------------

    def _resolve(self, request: ApprovalRequest) -> tuple[str, Pending, ApprovalRequest] | None:
        """The pending proposal ``request`` applies to, or None after recording why not."""
        now = self._clock()
        found = self._book.match(request, now, self._audit.last_kind)
        if isinstance(found[1], str):
            self._refuse(request, found[0], now, found[1])
            return None
        ident, pending = found[0], found[1]
        if now >= pending.expires_at:
            self._expire(ident, now)
            self._book.show(now)
            self._refuse(request, Refusal.EXPIRED, now, "")
            return None
        return ident, pending, request

    def _refuse(self, request: ApprovalRequest, code: str, now: float, detail: str = "") -> None:
        """Record, log and publish an approval or rejection that does nothing."""
        ids = tuple(self.pending)
        refused = RefusedApproval(request, code, detail or f"{request.verb} refused", now, ids)
        known = self.pending.get(request.action_id or "")
        self._audit.record_message(
            "approval_refused",
            now,
            code=code,
            detail=refused.detail,
            origin={"verb": request.verb, **request.origin.to_dict()},
            action_id=request.action_id or "",
            event=None
            if known is None
            else ActionEvent("proposed", known.proposal, known.proposal.ts, known.mode),
        )
        self._publish(self.config.event_topic, refused.to_payload())
        log.warning(
            "action_approval_refused",
            verb=request.verb,
            code=code,
            action_id=request.action_id,
            topic=request.origin.topic,
            retained=request.origin.retained,
            pending=len(ids),
        )
        return None

    def _expire(self, ident: str, now: float) -> ActionEvent | None:
        pending = self.pending.pop(ident, None)
        if pending is None:
            return None
        return self._emit("expired", pending.proposal, pending.mode, Code.CONFIRM_TIMEOUT, "")

    def _execute(
        self,
        proposal: Proposal,
        spec: ActionSpec,
        origin: dict[str, object],
        *,
        mode: str | None = None,
    ) -> ActionEvent:
        mode = spec.mode if mode is None else mode
        values = {"device": proposal.device, **proposal.params}
        try:
            topic = render(spec.topic, values)
            payload = render(spec.payload, values).encode()
            self._publish(topic, payload)
        except (KeyError, EdgeAgentError) as exc:
            log.error("action_failed", action_id=proposal.id, error=str(exc))
            return self._emit(
                "failed", proposal, mode, Code.PUBLISH_FAILED, str(exc), origin=origin
            )
        now = self._clock()
        self.history.record(proposal.action, proposal.device, now)
        return self._emit("performed", proposal, mode, topic=topic, payload=payload, origin=origin)

    def _emit(
        self,
        kind: ActionEventType,
        proposal: Proposal,
        mode: str,
        code: str = "",
        detail: str = "",
        *,
        expires_at: float | None = None,
        facts: Sequence[MetricFacts] | None = None,
        topic: str | None = None,
        payload: bytes | None = None,
        origin: dict[str, object] | None = None,
    ) -> ActionEvent:
        extra: dict[str, object] = {} if topic is None else {"topic": topic}
        if origin is not None:  # who decided: published without the sender's own tags
            extra["decided_by"] = {k: origin.get(k) for k in ("topic", "by", "retained")}
        event = ActionEvent(kind, proposal, self._clock(), mode, code, detail, expires_at, extra)
        self._audit.record(event, facts=facts, topic=topic, payload=payload, origin=origin)
        self._publish(self.config.event_topic, event.to_payload())
        if kind != "proposed":
            self._book.close(proposal.id, kind)
        log.info(
            _LOG_EVENTS[kind],
            action_id=proposal.id,
            action=proposal.describe(),
            mode=mode,
            code=code,
            detail=detail,
        )
        return event

    def _proposal(
        self,
        cand: Candidate | None,
        raw: str,
        window: Window,
        now: float,
        doc: object = None,
    ) -> Proposal:
        if cand is None:  # keep what can be read of a rejected document, as text
            got = doc if isinstance(doc, dict) else {}
            cand = Candidate(
                str(got.get("action", ""))[:64],
                str(got.get("device", ""))[:64],
                {},
                str(got.get("reason", ""))[:200],
            )
        return Proposal(
            id=uuid.uuid4().hex[:12],
            action=cand.action,
            device=cand.device,
            params=dict(cand.params),
            reason=cand.reason,
            window=window,
            ts=now,
            model=self._generator.model_id,
            prompt_version=PROMPT_VERSION,
            raw=raw[:2000],
        )
