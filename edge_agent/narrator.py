"""The single owner of "facts -> checked text": findings, prompts, generation, grounding.

The service hands it facts (and open excursions) and gets back text it may publish.
The model narrates the top findings; code decides whether the narration may be
published. Text that says anything the findings do not (a number in the wrong role or
unit, a state word that does not match, a name from elsewhere), that was cut off by
the deadline or is empty, is replaced by a deterministic rendering of the same
findings (``fallback: true`` with the reason). The actions engine sizes its prompt with
the same :func:`fit_request`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import tzinfo

import structlog

from edge_agent.domain import Excursion, ExplainedChange, MetricFacts
from edge_agent.errors import GenerationError
from edge_agent.findings import Finding, FindingRules, Findings, find
from edge_agent.grounding import check, states_finding
from edge_agent.llm.base import GenerationRequest, Generator
from edge_agent.mentions import NameIndex
from edge_agent.numguard import NumberGuard
from edge_agent.prompts import (
    Prompt,
    answer_prompt,
    cut,
    fallback_answer,
    fallback_text,
    fit_facts,
    notes,
    relevant,
    summary_prompt,
    summary_title,
)
from edge_agent.semantics import Naming
from edge_agent.wording import wording
from edge_agent.worker import InferenceWorker

log = structlog.get_logger(__name__)
# Enough of a rejected narration to see what went wrong, without flooding the journal.
_REJECTED_LOG_CHARS = 300
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")

TextSink = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class NarratorConfig:
    """Plain values from the summary (and anomaly) settings."""

    max_new_tokens: int
    ask_max_new_tokens: int
    deadline_s: float
    language: str = "en"
    home: str = ""
    limits: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    """Per metric, the normal (min, max) range: a level beyond it is an alert."""
    device_names: Mapping[str, str] = field(default_factory=dict)
    area_names: Mapping[str, str] = field(default_factory=dict)
    tz: tzinfo | None = None
    """Time zone of the clock times in texts; None is the system's."""


@dataclass(frozen=True, slots=True)
class Narration:
    """Text ready to publish, and how it came about."""

    text: str
    findings: tuple[Finding, ...]
    fallback: bool
    reason: str
    prompt_tokens: int = 0
    new_tokens: int = 0
    latency_s: float = 0.0
    stop_reason: str = ""

    @property
    def fact_ids(self) -> tuple[str, ...]:
        """Ids of the facts behind the findings shown, without repeats."""
        return tuple(dict.fromkeys(f.fact_id for f in self.findings))


@dataclass(slots=True)
class NarrationStats:
    """Counters published on the status topic."""

    grounded: int = 0
    fallbacks: int = 0
    last_decode_tok_s: float | None = None
    last_error: str | None = None
    last_error_at: float = 0.0
    """``time.monotonic()`` when ``last_error`` was set: the status shows the newest error."""


class Narrator:
    """Findings in, checked text out, through the worker's one-at-a-time model."""

    def __init__(
        self,
        worker: InferenceWorker,
        config: NarratorConfig,
        guard: NumberGuard | None = None,
        names: Naming | None = None,
    ) -> None:
        self._worker = worker
        self._cfg = config
        self._guard = guard
        """Keeps the model's numbers to the shown ones while it writes (None: off)."""
        self.names = names or Naming(config.device_names, config.area_names)
        """Display names; the ingest teaches it the names devices announce."""
        self._rules = FindingRules(limits=config.limits, language=config.language, tz=config.tz)
        self._stats = NarrationStats()
        self._known: tuple[tuple[int, int, int], NameIndex] | None = None
        """The last name index and what it was built from (see :meth:`display_names`)."""

    def counters(self) -> NarrationStats:
        """A copy of the counters the status topic publishes."""
        return replace(self._stats)

    @property
    def generator(self) -> Generator:
        """The model behind the worker."""
        return self._worker.generator

    @property
    def model_id(self) -> str:
        """The loaded model's id, published with every text."""
        return self._worker.generator.model_id

    @property
    def language(self) -> str:
        """The configured language of texts."""
        return self._cfg.language

    # --- findings and deterministic texts -------------------------------------------

    def findings(
        self,
        facts: Sequence[MetricFacts],
        *,
        excursions: Sequence[Excursion] = (),
        baseline: Sequence[MetricFacts] = (),
        window_s: float = 0.0,
        explained: Sequence[ExplainedChange] = (),
    ) -> Findings:
        """What is notable in ``facts``, ranked (see :mod:`edge_agent.findings`)."""
        return find(
            facts,
            rules=self._rules,
            names=self.names,
            excursions=excursions,
            baseline=baseline,
            window_s=window_s,
            explained=explained,
        )

    def area_name(self, area: str | None) -> str:
        """The display name of ``area``."""
        return self.names.area(area)

    def title(self, area: str | None, findings: Findings) -> str:
        """The one-line state of an area: "Living room: 21.4 °C, CO2 701 ppm and rising"."""
        name = self.names.area(area) if area is not None else None
        return summary_title(name, findings.items, self._cfg.language)

    def home(
        self,
        areas: Mapping[str | None, Findings],
        texts: Mapping[str | None, tuple[str, bool, str]] | None = None,
    ) -> tuple[str, str, bool, str]:
        """The whole-home (title, text, fallback, reason): for each area with news, its
        published summary (``texts``: area -> (text, fallback, reason)) or else its top
        finding's sentence; "All quiet" when no area has news."""
        w = wording(self._cfg.language)
        heads, sentences, fallback, reason = [], [], False, ""
        for area, found in areas.items():
            top = found.top
            if top is None or not found.notable:
                continue
            name = self.names.area(area)
            heads.append(w.in_area(name, top.headline))
            text, replaced, why = (texts or {}).get(area) or (top.sentence, True, "home digest")
            sentences.append(w.in_area(name, text))
            if replaced and not fallback:
                fallback, reason = True, why
        if not sentences:
            return w.quiet, f"{w.quiet}.", False, ""
        return cut("; ".join(heads)), " ".join(sentences), fallback, reason

    # --- model texts ----------------------------------------------------------------

    async def summary(
        self,
        area: str | None,
        findings: Findings,
        *,
        on_text: TextSink | None = None,
        known_names: Iterable[str] = (),
    ) -> Narration | None:
        """The checked summary of one area's findings; None if a newer one superseded it."""
        shown, prompt, fallback = plan_summary(
            self.generator,
            self.names.area(area),
            findings,
            language=self._cfg.language,
            home=self._cfg.home,
            max_new_tokens=self._cfg.max_new_tokens,
        )
        return await self._narrate(
            f"summary:{area}",
            prompt,
            shown,
            fallback,
            on_text=on_text,
            known_names=known_names,
        )

    async def answer(
        self,
        question: str,
        facts: Sequence[MetricFacts],
        *,
        excursions: Sequence[Excursion] = (),
        known_names: Iterable[str] = (),
        key: str = "ask",
        explained: Sequence[ExplainedChange] = (),
    ) -> Narration | None:
        """The checked answer to ``question`` from the findings it is about."""
        found = self.findings(facts, excursions=excursions, explained=explained)
        shown = relevant(question, found.items)
        gen = self.generator

        def build(items: tuple[Finding, ...]) -> Prompt:
            return answer_prompt(
                question, items, style=gen.prompt_format, language=self._cfg.language,
                home=self._cfg.home,
            )  # fmt: skip

        shown, prompt = _fit_notes(gen, build, shown, self._cfg.ask_max_new_tokens)
        fallback = fallback_answer(question, shown, self._cfg.language)
        return await self._narrate(
            key, prompt, shown, fallback, answer=True, known_names=known_names, question=question
        )

    async def _narrate(
        self,
        key: str,
        prompt: Prompt,
        shown: tuple[Finding, ...],
        fallback: str,
        *,
        answer: bool = False,
        on_text: TextSink | None = None,
        known_names: Iterable[str] = (),
        question: str = "",
    ) -> Narration | None:
        request = narration_request(
            self.generator,
            prompt,
            max_new_tokens=self._cfg.ask_max_new_tokens if answer else self._cfg.max_new_tokens,
            deadline_s=self._cfg.deadline_s,
            on_text=on_text,
            guard=self._guard,
            shown=shown,
        )
        started = time.monotonic()
        try:
            result = await self._worker.submit(key, request, priority=answer)
        except GenerationError as exc:
            self._stats.last_error, self._stats.last_error_at = str(exc), time.monotonic()
            self._stats.fallbacks += 1
            log.error("generation_failed", key=key, error=str(exc))
            return Narration(
                fallback,
                shown,
                True,
                getattr(exc, "reason", None) or f"error: {exc}",  # BackendError: its code
                latency_s=time.monotonic() - started,
            )
        if result is None:
            return None
        if result.latency_s > 0:
            self._stats.last_decode_tok_s = result.new_tokens / result.latency_s
        text, reason = judge(
            result.text,
            result.stop_reason,
            shown,
            prompt,
            language=self._cfg.language,
            known_names=self.display_names(known_names),
            question=question,
        )
        if reason:
            self._stats.fallbacks += 1
            # The rejected text is what an operator needs to judge the model or the check.
            log.info(
                "narration_fallback",
                key=key,
                reason=reason,
                rejected=result.text.strip()[:_REJECTED_LOG_CHARS],
                fallbacks=self._stats.fallbacks,
            )
            text = fallback
        else:
            self._stats.grounded += 1
        return Narration(
            text=text,
            findings=shown,
            fallback=bool(reason),
            reason=reason,
            prompt_tokens=result.prompt_tokens,
            new_tokens=result.new_tokens,
            latency_s=result.latency_s,
            stop_reason=result.stop_reason,
        )

    def display_names(self, raw: Iterable[str]) -> NameIndex:
        """Raw device and area ids with their display names: what a text may not name
        unless its findings do.

        Built once per change of names, not per text: ``raw`` with a ``version`` (the
        store's live view of its names) is cached until that or a learned name changes.
        """
        version = getattr(raw, "version", None)
        key = None if version is None else (id(raw), version, self.names.version)
        if key is not None and self._known is not None and self._known[0] == key:
            return self._known[1]
        out: set[str] = set()
        for name in raw:
            out.update((name, self.names.device(name), self.names.area(name)))
        index = NameIndex(sorted(out))
        if key is not None:
            self._known = (key, index)
        return index


def plan_summary(
    gen: Generator,
    area_name: str,
    findings: Findings,
    *,
    language: str,
    home: str,
    max_new_tokens: int,
) -> tuple[tuple[Finding, ...], Prompt, str]:
    """The findings shown, the prompt and the fallback text of one area's summary."""

    def build(items: tuple[Finding, ...]) -> Prompt:
        return summary_prompt(
            area_name, items, style=gen.prompt_format, language=language, home=home
        )

    shown, prompt = _fit_notes(gen, build, notes(findings.items), max_new_tokens)
    return shown, prompt, fallback_text(shown, language)


def judge(
    raw: str,
    stop_reason: str,
    shown: Sequence[Finding],
    prompt: Prompt,
    *,
    language: str,
    known_names: Iterable[str] | NameIndex = (),
    question: str = "",
) -> tuple[str, str]:
    """The model's text made publishable, and why it may not be ("" when it may)."""
    text = tidy(raw, stop_reason)
    reason = reject_reason(
        text,
        shown,
        stop_reason,
        language=language,
        known_names=known_names,
        forbidden=prompt.example_words,
        question=question,
    )
    return text, reason


def tidy(text: str, stop_reason: str) -> str:
    """The model's text on one line; a text cut by the token limit loses its unfinished
    last sentence (or is empty when it has no finished one)."""
    text = " ".join(text.split())
    if stop_reason == "max_new_tokens":
        ends = list(_SENTENCE_END.finditer(text))
        if ends:
            return text[: ends[-1].end()]
        # A base model that starts repeating itself ("...; the temperature is...")
        # has said everything before its last clause break: keep that, as a sentence.
        head, sep, _ = text.rpartition(";")
        return head.rstrip(" ,") + "." if sep and head.strip() else ""
    return text


def reject_reason(
    text: str,
    shown: Sequence[Finding],
    stop_reason: str,
    *,
    language: str = "en",
    known_names: Iterable[str] | NameIndex = (),
    forbidden: Iterable[str] = (),
    question: str = "",
) -> str:
    """Why ``text`` may not be published ("" when it may): late, empty, ungrounded, or a
    summary without its top notable finding."""
    if stop_reason == "deadline":
        return "deadline"
    if not text:
        return "empty"
    result = check(
        text,
        shown,
        language=language,
        known_names=known_names,
        forbidden=forbidden,
        question=question,
    )
    if not result.ok:
        return f"grounding: {result.reason}"
    if not question and shown and shown[0].notable and not states_finding(text, shown[0]):
        # True but beside the point: a summary that leaves out what matters most (CO2
        # over its limit, a door left open) would read as "all is well".
        return "missed top finding"
    return ""


def narration_request(
    generator: Generator,
    prompt: Prompt,
    *,
    max_new_tokens: int,
    deadline_s: float | None = None,
    on_text: TextSink | None = None,
    guard: NumberGuard | None = None,
    shown: Sequence[Finding] = (),
) -> GenerationRequest:
    """``prompt`` in the model's template, with its static head marked for the KV cache;
    with ``guard``, the model can only write the numbers of the ``shown`` findings."""
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
        logits_processor=(
            guard.processor(n.digits for f in shown for n in f.numbers) if guard else None
        ),
    )


def _fit_notes(
    gen: Generator,
    build: Callable[[tuple[Finding, ...]], Prompt],
    items: Sequence[Finding],
    max_new_tokens: int,
) -> tuple[tuple[Finding, ...], Prompt]:
    """The most findings (best first) whose prompt leaves room for the answer."""
    chosen = tuple(items)
    while True:
        prompt = build(chosen)
        used = gen.count_tokens(gen.render(prompt.text))
        if used + max_new_tokens <= gen.context_length or len(chosen) <= 1:
            return chosen, prompt
        chosen = chosen[:-1]


def fit_request(
    gen: Generator,
    facts: Sequence[MetricFacts],
    build: Callable[[tuple[MetricFacts, ...]], Prompt],
    *,
    max_new_tokens: int,
    first: Iterable[str] = (),
) -> tuple[tuple[MetricFacts, ...], Prompt]:
    """The most relevant facts that fit the context beside the prompt and the answer.

    ``build`` makes the prompt from a set of facts; its size without facts is the fixed
    cost, and what the context has left after it and the answer goes to facts. Shared by
    the narrator and the actions engine, so both budget the same way.
    """
    fixed = gen.count_tokens(gen.render(build(()).text))
    budget = gen.context_length - max_new_tokens - fixed
    chosen = fit_facts(facts, max(budget, 0), gen.count_tokens, first)
    return chosen, build(chosen)
