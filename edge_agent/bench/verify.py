"""What one forward pass over k new tokens costs against a one-token step, per folder.

Drafting pays off when a pass over the decoded token plus k-1 drafts costs less than
the tokens it yields. This times ``forward_rows`` over k tokens after a fixed context,
for every folder and k, in alternating order within each round (the machine drifts),
always at the same position (the cache is rewound, so every pass sees the same
context). Comparing a folder exported with ``--verify-positions 1`` against one with
K >= k isolates the LM head's cost on k rows.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class PassCost:
    """Median milliseconds of a k-token pass, one value per round."""

    folder: str
    tokens: int
    ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        """Median over the rounds."""
        return statistics.median(self.ms)


def measure(
    folders: list[Path],
    tokens: tuple[int, ...],
    *,
    past: int,
    rounds: int,
    repeats: int,
    threads: int,
) -> list[PassCost]:
    """Time k-token passes after ``past`` positions, alternating folders and k per round."""
    from edge_agent.llm.draft import DraftConfig
    from edge_agent.llm.runtime import OnnxGenerator

    rng = np.random.default_rng(0)
    engines = []
    for folder in folders:
        generator = OnnxGenerator.load(
            folder,
            threads=threads,
            verify=False,
            context_tokens=past + max(tokens) + 64,
            draft=DraftConfig(enabled=False),
        )
        engine = generator._engine  # the bench times the engine itself, no sampling
        engine.reserve(past + max(tokens), keep=0)
        ids = [int(i) for i in rng.integers(1000, 20000, size=past + max(tokens))]
        engine.forward(ids[:past], 0)
        engines.append((str(folder), engine, ids))
    times: dict[tuple[str, int], list[float]] = {}
    for number in range(rounds):
        order = [(e, k) for e in engines for k in tokens]
        if number % 2:
            order.reverse()
        for (name, engine, ids), k in order:
            step = ids[past : past + k]
            samples = []
            for _ in range(repeats):
                started = time.perf_counter()
                engine.forward_rows(step, past)
                samples.append(time.perf_counter() - started)
            times.setdefault((name, k), []).append(1000 * statistics.median(samples))
    return [PassCost(name, k, tuple(times[(name, k)])) for name, _, _ in engines for k in tokens]


def render(costs: list[PassCost]) -> str:
    """One row per folder and k: ms per pass, its ratio to k=1, and ms per token."""
    lines = [f"{'folder':48s} {'k':>3s} {'ms/pass':>9s} {'vs k=1':>7s}  rounds (ms)"]
    ones = {c.folder: c.median_ms for c in costs if c.tokens == 1}
    for c in costs:
        base = ones.get(c.folder)
        ratio = f"{c.median_ms / base:.2f}x" if base else "n/a"
        rounds = " ".join(f"{v:.1f}" for v in c.ms)
        lines.append(
            f"{c.folder[-48:]:48s} {c.tokens:>3d} {c.median_ms:>9.2f} {ratio:>7s}  {rounds}"
        )
    return "\n".join(lines)
