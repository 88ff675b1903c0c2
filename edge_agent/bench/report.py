"""The benchmark table: our numbers, each peer's, and ours/peer ratios (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.bench.result import EngineResult


@dataclass(frozen=True, slots=True)
class Metric:
    """A table row: how to read it off a result, and which direction is better."""

    label: str
    value: Callable[[EngineResult], float | None]
    higher_is_better: bool
    digits: int = 2


METRICS = (
    Metric("prompt tokens", lambda r: r.prompt_tokens, True, 0),
    Metric("new tokens", lambda r: r.new_tokens, True, 0),
    Metric("prefill tok/s", lambda r: r.prefill_tok_s, True, 1),
    Metric("decode tok/s", lambda r: r.decode_tok_s, True, 2),
    Metric("TTFT s", lambda r: r.ttft_s, False, 3),
    Metric("long prompt tokens", lambda r: r.long_prompt_tokens, True, 0),
    Metric("TTFT long, uncached s", lambda r: r.ttft_uncached_s, False, 3),
    Metric("TTFT long, cached prefix s", lambda r: r.ttft_cached_s, False, 3),
    Metric("load s", lambda r: r.load_s, False, 2),
    Metric("peak RSS MiB, timed runs", lambda r: r.runs_peak_rss_mb, False, 0),
    Metric("peak RSS MiB, whole bench", lambda r: r.peak_rss_mb, False, 0),
)
# Counts are context, not performance: no ratio for them.
_NO_RATIO = {"prompt tokens", "new tokens", "long prompt tokens"}


def render_table(results: list[EngineResult]) -> str:
    """A plain-text table; the first result is ours, the others get a ratio column."""
    ours, peers = results[0], [r for r in results[1:] if not r.skipped]
    header = ["metric", ours.engine]
    for peer in peers:
        header += [peer.engine, f"ours/{_short(peer.engine)}"]
    rows = [header]
    for metric in METRICS:
        mine = metric.value(ours)
        row = [metric.label, _fmt(mine, metric.digits)]
        for peer in peers:
            theirs = metric.value(peer)
            row.append(_fmt(theirs, metric.digits))
            ratio = None if metric.label in _NO_RATIO else _ratio(mine, theirs)
            row.append("" if ratio is None else f"{ratio:.2f}x")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    out = "\n".join(lines)
    if ours.ttft_cached_s and ours.ttft_uncached_s:
        share = ours.ttft_cached_s / ours.ttft_uncached_s
        out += f"\n\ncached-prefix TTFT / uncached TTFT (ours): {share:.2f}"
    for r in results:
        if r.skipped:
            out += f"\nskipped {r.engine}: {r.skipped}"
    out += "\nratios are ours/peer: above 1 is better for rates, below 1 for times and memory"
    return out


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    if mine is None or theirs is None or theirs == 0:
        return None
    return mine / theirs


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}"


def _short(engine: str) -> str:
    return {"onnxruntime-genai": "genai", "llama.cpp": "llama"}.get(engine, engine)
