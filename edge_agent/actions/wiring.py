"""Builds the actions engine from settings and the loaded model (called by the app)."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from edge_agent.actions.audit import AuditLog
from edge_agent.actions.constrain import JsonConstraint, WarmStats
from edge_agent.actions.dfa import compile_grammar
from edge_agent.actions.engine import ActionsEngine, EngineConfig, Publish, Submit
from edge_agent.actions.grammar import build_grammar
from edge_agent.actions.policy import Policy
from edge_agent.actions.schema import proposal_schema
from edge_agent.actions.vocab import TokenArrays, TokenTable
from edge_agent.domain import Topics
from edge_agent.llm.base import Generation, GenerationRequest, Generator
from edge_agent.llm.manifest import Manifest
from edge_agent.settings import ActionSpec, ActionsSettings

log = structlog.get_logger(__name__)


def build_constraint(
    specs: tuple[ActionSpec, ...], reason_max: int, model_dir: Path
) -> JsonConstraint:
    """Compile the proposal grammar against the model folder's vocabulary.

    Costs a second or two on a 262k vocabulary (mostly reading ``tokenizer.json``);
    masks are computed on first use, or ahead by :func:`warm_in_background`.
    """
    started = time.monotonic()
    eos = Manifest.from_dir(model_dir).eos_token_ids
    table = TokenTable.from_tokenizer_json(model_dir / "tokenizer.json", eos)
    constraint = JsonConstraint(
        compile_grammar(build_grammar(specs, reason_max)), TokenArrays.pack(table)
    )
    log.info(
        "action_grammar_ready",
        states=constraint.dfa.size,
        vocab=constraint.tokens.size,
        build_s=round(time.monotonic() - started, 3),
    )
    return constraint


def warm_in_background(constraint: JsonConstraint) -> Future[WarmStats]:
    """Compute every mask on a daemon thread; the future holds what it took.

    Without it the first proposal pays for its masks token by token (some 4-8 ms per
    token instead of 0.3 on Gemma 3's vocabulary). A thread keeps the event loop free
    while the service connects; a proposal that comes first just computes (under the
    constraint's lock) what it needs. Daemon: a quick shutdown need not wait for it.
    """
    done: Future[WarmStats] = Future()

    def work() -> None:
        try:
            stats = constraint.warm()
        # Not fatal: every mask is still computed on first use. Any error here is a bug
        # that the first proposal will raise again, where it is reported to the user.
        except Exception as exc:
            log.exception("action_masks_warmup_failed")
            done.set_exception(exc)
            return
        log.info(
            "action_masks_warm",
            states=stats.states,
            warm_s=round(stats.seconds, 3),
            mask_bytes=stats.mask_bytes,
        )
        done.set_result(stats)

    threading.Thread(target=work, name="action-masks", daemon=True).start()
    return done


def action_constraint(settings: ActionsSettings, model_dir: Path) -> JsonConstraint | None:
    """The proposal grammar if an allowlisted action is switched on, else None.

    Seconds of work on a 262k vocabulary, so the service calls it off the event loop,
    beside the model load.
    """
    if not any(a.mode != "off" for a in settings.allow):
        return None
    return build_constraint(settings.allow, settings.reason_max_chars, model_dir)


class ServerSchemaConstraint(JsonConstraint):
    """The proposal for a model on a server: its JSON schema goes in the request.

    The engine asks every constraint for a logits processor; this one's runs over a
    256-byte vocabulary and is never applied (the server has the real vocabulary),
    because :func:`build_engine` swaps it for ``schema`` on each request.
    """

    def __init__(self, specs: tuple[ActionSpec, ...], reason_max: int) -> None:
        bytes_only = TokenTable(tuple(bytes((b,)) for b in range(256)), frozenset())
        super().__init__(
            compile_grammar(build_grammar(specs, reason_max)), TokenArrays.pack(bytes_only)
        )
        self.schema: Mapping[str, Any] = proposal_schema(specs, reason_max)


class SchemaServer(Protocol):
    """A generator on a server that may constrain output to a JSON schema."""

    def supports_json_schema(self) -> bool:
        """Ask the server once."""
        ...


def schema_constraint(settings: ActionsSettings, server: SchemaServer) -> JsonConstraint | None:
    """The proposal schema if actions are on and the server honours schemas, else None.

    A server that ignores ``response_format`` would let the model write anything;
    the policy would reject it, but every proposal would be noise, so actions are off.
    """
    if not any(a.mode != "off" for a in settings.allow):
        return None
    if not server.supports_json_schema():
        log.error(
            "actions_disabled",
            why="the model server does not constrain output to a JSON schema "
            "(response_format json_schema); use llama.cpp's llama-server, Ollama >= 0.5, "
            "vLLM or LocalAI, or the onnx backend",
        )
        return None
    return ServerSchemaConstraint(settings.allow, settings.reason_max_chars)


def _with_schema(submit: Submit, schema: Mapping[str, Any]) -> Submit:
    def send(key: str, request: GenerationRequest) -> Awaitable[Generation | None]:
        return submit(key, replace(request, logits_processor=None, json_schema=schema))

    return send


def build_engine(
    settings: ActionsSettings,
    *,
    constraint: JsonConstraint | None,
    generator: Generator,
    submit: Submit,
    publish: Publish,
    topics: Topics,
    deadline_s: float,
    clock: Callable[[], float] = time.time,
) -> ActionsEngine | None:
    """The engine over ``constraint`` (from :func:`action_constraint`), or None without one.

    Its masks start warming on a thread at once (``engine.warmup``).
    """
    if constraint is None:
        return None
    warmup: Future[WarmStats] | None = None
    if isinstance(constraint, ServerSchemaConstraint):
        submit = _with_schema(submit, constraint.schema)
    else:
        warmup = warm_in_background(constraint)
    return ActionsEngine(
        EngineConfig(
            event_topic=topics.action_event,
            max_new_tokens=settings.max_new_tokens,
            deadline_s=deadline_s,
            on_anomaly=settings.on_anomaly,
            interval_s=settings.interval_s,
            pending_topic=topics.action_pending,
            press_min_display_s=settings.press_min_display_s,
        ),
        Policy(
            settings.allow,
            reason_max=settings.reason_max_chars,
            quiet_hours=settings.quiet_hours,
        ),
        AuditLog.open(settings.audit_path),
        publish,
        generator,
        submit,
        constraint,
        clock,
        warmup=warmup,
    )
