"""Turns a prompt into checked text: budget, generation on the worker, grounding, fallback.

The model narrates; code decides whether the narration may be published. Text that
cites a number or a sensor not in the facts, or that was cut off by the deadline, is
replaced by a deterministic rendering of the facts (``fallback: true`` with the reason).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from edge_agent.domain import Anomaly, MetricFacts
from edge_agent.errors import GenerationError
from edge_agent.grounding import (
    check_grounding,
    fact_numbers,
    fact_units,
    numbers_in,
    quantities_in,
)
from edge_agent.llm.base import GenerationRequest, Generator
from edge_agent.narrate import Prompt, fallback_text, fit_facts
from edge_agent.worker import InferenceWorker

log = structlog.get_logger(__name__)
# Enough of a rejected narration to see what went wrong, without flooding the journal.
_REJECTED_LOG_CHARS = 300

TextSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class NarratorConfig:
    """Plain values from the summary settings."""

    max_new_tokens: int
    ask_max_new_tokens: int
    deadline_s: float


@dataclass(frozen=True, slots=True)
class Narration:
    """Text ready to publish, and how it came about."""

    text: str
    facts: tuple[MetricFacts, ...]
    fallback: bool
    reason: str
    prompt_tokens: int = 0
    new_tokens: int = 0
    latency_s: float = 0.0
    stop_reason: str = ""


@dataclass(slots=True)
class NarrationStats:
    """Counters published on the status topic."""

    grounded: int = 0
    fallbacks: int = 0
    last_decode_tok_s: float | None = None
    last_error: str | None = None


class Narrator:
    """Builds prompts within the context budget and checks what the model wrote."""

    def __init__(
        self,
        worker: InferenceWorker,
        config: NarratorConfig,
    ) -> None:
        self._worker = worker
        self._cfg = config
        self.stats = NarrationStats()

    @property
    def generator(self) -> Generator:
        """The model behind the worker."""
        return self._worker.generator

    def fit(
        self,
        facts: Sequence[MetricFacts],
        build: Callable[[tuple[MetricFacts, ...]], Prompt],
        *,
        answer: bool,
        first: Iterable[str] = (),
    ) -> tuple[tuple[MetricFacts, ...], Prompt]:
        """The most relevant facts that fit the context beside the prompt and the answer.

        ``build`` makes the prompt from a set of facts; its size without facts is the
        fixed cost, and what the context has left after it and the answer goes to facts.
        """
        gen = self.generator
        new_tokens = self._cfg.ask_max_new_tokens if answer else self._cfg.max_new_tokens
        fixed = gen.count_tokens(gen.render(build(()).text))
        budget = gen.context_length - new_tokens - fixed
        chosen = fit_facts(facts, max(budget, 0), gen.count_tokens, first)
        return chosen, build(chosen)

    async def narrate(
        self,
        key: str,
        prompt: Prompt,
        facts: tuple[MetricFacts, ...],
        *,
        anomalies: Sequence[Anomaly] = (),
        answer: bool = False,
        on_text: TextSink | None = None,
        extra_numbers: Iterable[float] = (),
        known_names: Iterable[str] = (),
    ) -> Narration | None:
        """Generate for ``prompt`` and check it; None if a newer request superseded it."""
        request = narration_request(
            self.generator,
            prompt,
            max_new_tokens=self._cfg.ask_max_new_tokens if answer else self._cfg.max_new_tokens,
            deadline_s=self._cfg.deadline_s,
            on_text=on_text,
        )
        started = time.monotonic()
        try:
            result = await self._worker.submit(key, request, priority=answer)
        except GenerationError as exc:
            self.stats.last_error = str(exc)
            self.stats.fallbacks += 1
            log.error("generation_failed", key=key, error=str(exc))
            return Narration(
                fallback_text(facts, anomalies),
                facts,
                True,
                getattr(exc, "reason", None) or f"error: {exc}",  # BackendError: its code
                latency_s=time.monotonic() - started,
            )
        if result is None:
            return None
        if result.latency_s > 0:
            self.stats.last_decode_tok_s = result.new_tokens / result.latency_s
        text = result.text.strip()
        reason = reject_reason(text, prompt, facts, result.stop_reason, extra_numbers, known_names)
        if reason:
            self.stats.fallbacks += 1
            # The rejected text is what an operator needs to judge the model or the check.
            log.info(
                "narration_fallback",
                key=key,
                reason=reason,
                rejected=text[:_REJECTED_LOG_CHARS],
                fallbacks=self.stats.fallbacks,
            )
            text = fallback_text(facts, anomalies)
        else:
            self.stats.grounded += 1
        return Narration(
            text=text,
            facts=facts,
            fallback=bool(reason),
            reason=reason,
            prompt_tokens=result.prompt_tokens,
            new_tokens=result.new_tokens,
            latency_s=result.latency_s,
            stop_reason=result.stop_reason,
        )


def narration_request(
    generator: Generator,
    prompt: Prompt,
    *,
    max_new_tokens: int,
    deadline_s: float | None = None,
    on_text: TextSink | None = None,
) -> GenerationRequest:
    """``prompt`` in the model's template, with its static head marked for the KV cache."""
    full = generator.render(prompt.text)
    # The rendered template head plus our static instructions: identical on every
    # request, so the runtime can keep its KV cache.
    prefix_chars = full.find(prompt.text) + len(prompt.static)
    return GenerationRequest(
        prompt=full,
        max_new_tokens=max_new_tokens,
        deadline_s=deadline_s,
        stop=prompt.stop,
        prefix_chars=max(prefix_chars, 0),
        on_text=on_text,
    )


def reject_reason(
    text: str,
    prompt: Prompt,
    facts: tuple[MetricFacts, ...],
    stop_reason: str,
    extra_numbers: Iterable[float] = (),
    known_names: Iterable[str] = (),
) -> str:
    """Why ``text`` may not be published ("" when it may): late, empty or ungrounded."""
    if stop_reason == "deadline":
        return "deadline"
    if not text:
        return "empty"
    allowed = fact_numbers(facts) | {v for v, _ in numbers_in(prompt.dynamic)}
    allowed |= set(extra_numbers)
    units = fact_units(facts)
    # A unit the prompt itself writes (an alert's "rose 3.2 °C", a question's
    # "above 25 °C") may be repeated with its number.
    for value, _, meant, _ in quantities_in(prompt.dynamic, units):
        for unit in meant:
            units[unit].add(value)
    cited = {f.device for f in facts} | {f.area for f in facts if f.area}
    result = check_grounding(text, allowed, cited, known_names, units)
    return "" if result.ok else f"grounding: {result.reason}"
