"""The actions engine: asks the model for a proposal, lets the policy decide, carries out.

I/O-light: it publishes through the function it is given, generates through the
worker's ``submit``, reads the clock it is given and writes the audit log. Modes:
``propose`` publishes only; ``confirm`` waits for ``.../action/approve`` (``PRESS`` for
the latest pending, or ``{"action_id": ...}``) until it expires; ``auto`` runs at once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import structlog

from edge_agent.actions.audit import AuditLog
from edge_agent.actions.constrain import JsonConstraint, WarmStats
from edge_agent.actions.policy import Candidate, History, Policy, parse_output
from edge_agent.actions.prompt import PROMPT_VERSION, proposal_prompt
from edge_agent.actions.template import render
from edge_agent.actions.types import NO_ACTION, ActionEvent, ActionEventType, Code, Proposal
from edge_agent.domain import Anomaly, MetricFacts, Window
from edge_agent.errors import EdgeAgentError, GenerationError
from edge_agent.llm.base import Generation, GenerationRequest, Generator
from edge_agent.narrate import Prompt
from edge_agent.narrator import fit_request
from edge_agent.settings import ActionSpec
from edge_agent.transport.base import Message

log = structlog.get_logger(__name__)

Submit = Callable[[str, GenerationRequest], Awaitable[Generation | None]]
PRESS = "PRESS"
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


@dataclass(frozen=True, slots=True)
class _Pending:
    proposal: Proposal
    expires_at: float
    devices: frozenset[str]


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
        self.pending: dict[str, _Pending] = {}
        """Confirm-mode proposals awaiting approval, oldest first."""
        self._closed: set[str] = set()
        now = clock()
        for action, device, ts in audit.performed_since(now - 3600.0):
            self.history.record(action, device, ts)  # rate limits survive a restart

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

        def build(subset: Sequence[MetricFacts]) -> Prompt:
            return proposal_prompt(subset, specs, style=gen.prompt_format, anomalies=anomalies)

        # The most relevant facts that fit beside the allowlist and the answer.
        first = [f"{a.device}.{a.metric}" for a in anomalies]
        _, prompt = fit_request(
            gen, facts, build, max_new_tokens=self.config.max_new_tokens, first=first
        )
        full = gen.render(prompt.text)
        # The grammar must close within the tokens the runtime will really allow.
        budget = min(self.config.max_new_tokens, gen.context_length - gen.count_tokens(full))
        request = GenerationRequest(
            prompt=full,
            max_new_tokens=budget,
            deadline_s=self.config.deadline_s,
            prefix_chars=max(full.find(prompt.text) + len(prompt.static), 0),
            logits_processor=self._constraint.processor(budget),
        )
        started = self._clock()
        try:
            result = await self._submit("actions", request)
        except GenerationError as exc:
            log.error("action_generation_failed", error=str(exc))
            blank = self._proposal(None, "", window, started)
            return self._emit("failed", blank, "", Code.GENERATION_FAILED, str(exc), facts=facts)
        if result is None:
            return None
        return self.decide(result.text, facts, window)

    def decide(self, text: str, facts: Sequence[MetricFacts], window: Window) -> ActionEvent | None:
        """Validate the model's ``text`` and act on it by the action's mode."""
        now = self._clock()
        doc, verdict = parse_output(text)
        cand: Candidate | None = None
        if verdict.ok:
            cand, verdict = self.policy.validate(
                doc,
                devices={f.device for f in facts},
                history=self.history,
                now=now,
                pending=[(p.proposal.action, p.proposal.device) for p in self.pending.values()],
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
        if spec.mode == "confirm":
            expires = now + spec.confirm_expiry_s
            self.pending[proposal.id] = _Pending(
                proposal, expires, frozenset(f.device for f in facts)
            )
            return self._emit("proposed", proposal, mode, expires_at=expires, facts=facts)
        event = self._emit("proposed", proposal, mode, facts=facts)
        if spec.mode == "auto":
            return self._execute(proposal, spec)
        self.history.record(proposal.action, proposal.device, now)  # propose: notify once
        return event

    # --- approval -------------------------------------------------------------------

    def on_approve(self, payload: bytes) -> ActionEvent | None:
        """``PRESS`` approves the latest pending proposal, ``{"action_id": id}`` that one."""
        found = self._find(payload, "approve")
        if found is None:
            return None
        ident, pending = found
        now = self._clock()
        if now >= pending.expires_at:
            return self._expire(ident, now)
        del self.pending[ident]
        p = pending.proposal
        cand = Candidate(p.action, p.device, p.params, p.reason)
        verdict = self.policy.context(cand, devices=pending.devices, history=self.history, now=now)
        spec = self.policy.specs[p.action]
        if not verdict.ok:
            return self._emit("rejected", p, spec.mode, verdict.code, verdict.detail)
        return self._execute(p, spec)

    def on_reject(self, payload: bytes) -> ActionEvent | None:
        """Reject a pending proposal (same payloads as approve)."""
        found = self._find(payload, "reject")
        if found is None:
            return None
        ident, pending = found
        del self.pending[ident]
        return self._emit("rejected", pending.proposal, "confirm", Code.USER_REJECTED, "rejected")

    def handlers(self, *, approve: str, reject: str) -> dict[str, Callable[[Message], None]]:
        """The service's topic handlers for the approve and reject topics."""

        def on_approve(message: Message) -> None:
            self.on_approve(message.payload)

        def on_reject(message: Message) -> None:
            self.on_reject(message.payload)

        return {approve: on_approve, reject: on_reject}

    def tick(self, now: float) -> list[ActionEvent]:
        """Expire every pending proposal whose time is up."""
        due = [i for i, p in self.pending.items() if now >= p.expires_at]
        return [e for i in due if (e := self._expire(i, now)) is not None]

    async def run(
        self, facts: Callable[[float], Sequence[MetricFacts]], window_s: float, every_s: float = 1.0
    ) -> None:
        """Expire pending proposals, and propose every ``interval_s`` if set; until cancelled."""
        last = self._clock()
        while True:
            await asyncio.sleep(every_s)
            now = self._clock()
            self.tick(now)
            if self.config.interval_s and now - last >= self.config.interval_s:
                last = now
                await self.propose(facts(now), Window(now - window_s, now))

    # --- internals ------------------------------------------------------------------

    def _find(self, payload: bytes, verb: str) -> tuple[str, _Pending] | None:
        text = payload.decode("utf-8", errors="replace").strip()
        ident: str | None = None
        if text.upper() == PRESS:
            if not self.pending:
                log.warning("action_approval_ignored", verb=verb, why="nothing pending")
                return None
            ident = next(reversed(self.pending))
        else:
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                doc = text
            if isinstance(doc, dict):
                doc = doc.get("action_id", doc.get("id"))
            ident = str(doc)[:64] if isinstance(doc, str | int) else None
        pending = self.pending.get(ident) if ident else None
        if ident is None or pending is None:
            why = "stale" if ident in self._closed else "unknown id"
            log.warning("action_approval_ignored", verb=verb, why=why, action_id=ident)
            return None
        return ident, pending

    def _expire(self, ident: str, now: float) -> ActionEvent | None:
        pending = self.pending.pop(ident, None)
        if pending is None:
            return None
        return self._emit("expired", pending.proposal, "confirm", Code.CONFIRM_TIMEOUT, "")

    def _execute(self, proposal: Proposal, spec: ActionSpec) -> ActionEvent:
        values = {"device": proposal.device, **proposal.params}
        try:
            topic = render(spec.topic, values)
            payload = render(spec.payload, values).encode()
            self._publish(topic, payload)
        except (KeyError, EdgeAgentError) as exc:
            log.error("action_failed", action_id=proposal.id, error=str(exc))
            return self._emit("failed", proposal, spec.mode, Code.PUBLISH_FAILED, str(exc))
        now = self._clock()
        self.history.record(proposal.action, proposal.device, now)
        return self._emit("performed", proposal, spec.mode, topic=topic, payload=payload)

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
    ) -> ActionEvent:
        extra = {} if topic is None else {"topic": topic}
        event = ActionEvent(kind, proposal, self._clock(), mode, code, detail, expires_at, extra)
        self._audit.record(event, facts=facts, topic=topic, payload=payload)
        self._publish(self.config.event_topic, event.to_payload())
        if kind != "proposed":
            self._closed.add(proposal.id)
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
