"""Benchmark of constrained decoding: the constraint's cost per token against a decode step.

    edge-agent bench actions --model DIR [--runs N] [--new-tokens N] [--threads N]

On one model folder, in one process, each round runs three greedy generations of the
same proposal prompt (the engine's, over a two-action allowlist):

* unconstrained: the model's decode step (ms per token), the peer of the others;
* constrained, cold: a fresh constraint, so its masks are computed as tokens need them
  (what the first proposal cost before the start-up warm-up);
* constrained, warm: a fresh constraint warmed first (the warm-up is timed), as the
  service now runs it.

The constraint's own time (mask lookup or computation, plus masking the logits) is
measured around every call of the logits processor; its % is taken against the
unconstrained step of the same round. Medians and min-max over the rounds are printed.
The warm constrained step minus the unconstrained one is shown as a cross-check: it also
holds the runtime's copy of the logits for the hook, and much more noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_agent.actions.constrain import ConstrainedProcessor, JsonConstraint
from edge_agent.actions.dfa import compile_grammar
from edge_agent.actions.grammar import build_grammar
from edge_agent.actions.prompt import proposal_prompt
from edge_agent.actions.vocab import TokenArrays, TokenTable
from edge_agent.domain import MetricFacts
from edge_agent.errors import ConfigError
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.settings import ActionSpec

REASON_MAX = 120
SPECS = (
    ActionSpec(
        id="hall_light",
        description="Switch the hall light",
        topic="zigbee2mqtt/{device}/set",
        payload='{"state": "{state}", "brightness": {brightness}}',
        devices=("hall_lamp", "porch lamp", "kitchen spots"),
        risk="low",
        mode="confirm",
        params={
            "state": {"type": "enum", "values": ("ON", "OFF")},
            "brightness": {"type": "int", "min": 0, "max": 254},
        },
    ),
    ActionSpec(
        id="heat",
        description="Set a radiator",
        topic="zigbee2mqtt/{device}/set",
        payload='{"current_heating_setpoint": {target}}',
        devices=("living_trv", "bedroom_trv"),
        risk="medium",
        mode="confirm",
        params={"target": {"type": "float", "min": 5, "max": 30, "decimals": 1}},
    ),
)
"""The benchmark's allowlist: two actions, an enum, an int and a float parameter."""


@dataclass(frozen=True, slots=True)
class Spread:
    """Median and range of one measure over the rounds."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Summarise ``values`` (at least one)."""
        return cls(statistics.median(values), min(values), max(values))


@dataclass(frozen=True, slots=True)
class ActionsBench:
    """One run of the benchmark; times in ms, shares in %."""

    model: str
    vocab: int
    states: int
    """DFA states once equivalent states are merged (as the service compiles it)."""
    states_unmerged: int
    rounds: int
    step_ms: Spread
    """Unconstrained decode step (the peer)."""
    excess_ms: Spread
    """Warm constrained step minus the unconstrained one of the round (cross-check)."""
    cold_ms: Spread
    warm_ms: Spread
    cold_pct: Spread
    warm_pct: Spread
    warmup_ms: Spread
    mask_bytes: int
    """Masks of every reachable state, merged DFA."""
    mask_bytes_unmerged: int
    plain_tokens: int
    constrained_tokens: int
    output: str


class _Timed:
    """Wraps a processor and sums the time spent in it."""

    def __init__(self, inner: ConstrainedProcessor) -> None:
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(
        self, generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        started = time.perf_counter()
        out = self.inner(generated, logits)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return out


def _facts() -> list[MetricFacts]:
    now = time.time()
    return [
        MetricFacts("hall_lamp", "brightness", 12, 3.0, 0.0, 40.0, 9.5, now - 600, now),
        MetricFacts("living_trv", "local_temperature", 12, 17.2, 17.0, 19.1, 18.0, now - 600, now),
    ]


def _step_ms(gen: OnnxGenerator) -> float:
    t = gen.last_times
    assert t is not None  # set by every generate()
    return 1000 * t.decode_s / max(t.decode_tokens, 1)


def bench_actions(
    model_dir: Path, *, threads: int = 2, runs: int = 5, new_tokens: int = 96
) -> ActionsBench:
    """Measure constrained decoding on ``model_dir`` (see the module docstring)."""
    if runs < 1 or new_tokens < 16 or threads < 1:
        raise ConfigError("--runs and --threads must be at least 1, --new-tokens at least 16")
    gen = OnnxGenerator.load(model_dir, threads=threads)
    table = TokenTable.from_tokenizer_json(model_dir / "tokenizer.json", gen.manifest.eos_token_ids)
    tokens = TokenArrays.pack(table)
    grammar = build_grammar(SPECS, REASON_MAX)
    dfa = compile_grammar(grammar)
    unmerged = JsonConstraint(compile_grammar(grammar, merge=False), tokens)
    unmerged.warm()
    prompt = gen.render(proposal_prompt(_facts(), SPECS, style=gen.prompt_format).text)
    if gen.count_tokens(prompt) + new_tokens > gen.context_length:  # as the engine does
        prompt = gen.render(
            proposal_prompt(_facts(), SPECS, style=gen.prompt_format, examples=False).text
        )
    budget = min(new_tokens, gen.context_length - gen.count_tokens(prompt))
    if budget < 16:
        raise ConfigError(f"the proposal prompt leaves {budget} tokens of {model_dir}'s context")
    gen.generate(GenerationRequest(prompt, max_new_tokens=budget))  # onnxruntime warm-up

    plain: list[float] = []
    excess: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    warmups: list[float] = []
    for _ in range(runs):
        gen.generate(GenerationRequest(prompt, max_new_tokens=budget))
        plain.append(_step_ms(gen))
        assert gen.last_times is not None
        plain_tokens = gen.last_times.decode_tokens
        cold.append(_constrained(gen, JsonConstraint(dfa, tokens), prompt, budget)[0])
        warmed = JsonConstraint(dfa, tokens)
        warmups.append(1000 * warmed.warm().seconds)
        per_token, calls, text = _constrained(gen, warmed, prompt, budget)
        warm.append(per_token)
        excess.append(_step_ms(gen) - plain[-1])
    return ActionsBench(
        model=str(model_dir),
        vocab=tokens.size,
        states=dfa.size,
        states_unmerged=unmerged.dfa.size,
        rounds=runs,
        step_ms=Spread.of(plain),
        excess_ms=Spread.of(excess),
        cold_ms=Spread.of(cold),
        warm_ms=Spread.of(warm),
        cold_pct=Spread.of([100 * c / p for c, p in zip(cold, plain, strict=True)]),
        warm_pct=Spread.of([100 * w / p for w, p in zip(warm, plain, strict=True)]),
        warmup_ms=Spread.of(warmups),
        mask_bytes=warmed.mask_bytes,
        mask_bytes_unmerged=unmerged.mask_bytes,
        plain_tokens=plain_tokens,
        constrained_tokens=calls,
        output=text,
    )


def _constrained(
    gen: OnnxGenerator, constraint: JsonConstraint, prompt: str, budget: int
) -> tuple[float, int, str]:
    """One constrained generation: ms per processor call, calls, and the text."""
    timed = _Timed(constraint.processor(budget))
    result = gen.generate(GenerationRequest(prompt, max_new_tokens=budget, logits_processor=timed))
    return 1000 * timed.seconds / max(timed.calls, 1), timed.calls, result.text


def render(r: ActionsBench) -> str:
    """A small table: one measure per line, median and min-max."""

    def row(label: str, s: Spread, unit: str) -> str:
        return f"{label:<40}{s.median:>9.3f} {unit:<3}{s.low:>9.3f} - {s.high:.3f}"

    return "\n".join(
        [
            f"model {r.model}",
            f"vocab {r.vocab}, {r.states} DFA states ({r.states_unmerged} before merging), "
            f"{r.rounds} rounds; {r.plain_tokens} unconstrained and "
            f"{r.constrained_tokens} constrained tokens per generation",
            f"{'':<40}{'median':>9}    {'min - max':>9}",
            row("unconstrained decode step", r.step_ms, "ms"),
            row("constraint per token, cold masks", r.cold_ms, "ms"),
            row("constraint per token, warm masks", r.warm_ms, "ms"),
            row("  cold, % of an unconstrained step", r.cold_pct, "%"),
            row("  warm, % of an unconstrained step", r.warm_pct, "%"),
            row("mask warm-up (all states)", r.warmup_ms, "ms"),
            row("warm constrained step - unconstrained", r.excess_ms, "ms"),
            f"mask memory {r.mask_bytes:,} bytes ({r.mask_bytes_unmerged:,} before merging "
            "equivalent states)",
            f"output {r.output[:100]!r}",
        ]
    )
