"""Builds the actions engine from settings and the loaded model (called by the app)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import structlog

from edge_agent.actions.audit import AuditLog
from edge_agent.actions.constrain import JsonConstraint, WarmStats
from edge_agent.actions.dfa import compile_grammar
from edge_agent.actions.engine import ActionsEngine, EngineConfig, Publish, Submit
from edge_agent.actions.grammar import build_grammar
from edge_agent.actions.policy import Policy
from edge_agent.actions.vocab import TokenArrays, TokenTable
from edge_agent.llm.base import Generator
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


def build_engine(
    settings: ActionsSettings,
    *,
    constraint: JsonConstraint | None,
    generator: Generator,
    submit: Submit,
    publish: Publish,
    event_topic: str,
    deadline_s: float,
    clock: Callable[[], float] = time.time,
) -> ActionsEngine | None:
    """The engine over ``constraint`` (from :func:`action_constraint`), or None without one.

    Its masks start warming on a thread at once (``engine.warmup``).
    """
    if constraint is None:
        return None
    return ActionsEngine(
        EngineConfig(
            event_topic=event_topic,
            max_new_tokens=settings.max_new_tokens,
            deadline_s=deadline_s,
            on_anomaly=settings.on_anomaly,
            interval_s=settings.interval_s,
            # Beside the event topic: <base>/<node_id>/action/pending.
            pending_topic=event_topic.rsplit("/", 1)[0] + "/pending",
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
        warmup=warm_in_background(constraint),
    )
