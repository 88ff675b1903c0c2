"""The benchmark table: our numbers, each peer's, and ours/peer ratios (pure).

With several rounds (every engine measured once per round), a value is the median
over the rounds, a peak is the highest, and a ratio is the median of each round's own
ratio: engines measured next to each other share the machine's drift on a busy host.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_agent.bench.result import EngineResult


@dataclass(frozen=True, slots=True)
class Metric:
    """A table row: how to read it off a result, and which direction is better."""

    label: str
    value: Callable[[EngineResult], float | None]
    higher_is_better: bool
    digits: int = 2
    """Decimal places for counts and rates; ignored for times (see ``scale``)."""
    peak: bool = False
    """Across rounds, report the highest value (memory), not the median."""
    scale: float | None = None
    """Times: shown multiplied by this (1000: seconds as ms) with three significant digits,
    so a sub-millisecond TTFT reads 0.412 and not 0.000 (the JSON keeps full precision)."""


METRICS = (
    Metric("prompt tokens", lambda r: r.prompt_tokens, True, 0),
    Metric("new tokens", lambda r: r.new_tokens, True, 0),
    Metric("prefill tok/s", lambda r: r.prefill_tok_s, True, 1),
    Metric("decode tok/s", lambda r: r.decode_tok_s, True, 2),
    Metric("TTFT ms", lambda r: r.ttft_s, False, scale=1000.0),
    Metric("long prompt tokens", lambda r: r.long_prompt_tokens, True, 0),
    Metric("TTFT long, uncached ms", lambda r: r.ttft_uncached_s, False, scale=1000.0),
    Metric("TTFT long, cached prefix ms", lambda r: r.ttft_cached_s, False, scale=1000.0),
    Metric("load s", lambda r: r.load_s, False, scale=1.0),
    Metric("peak RSS MiB, timed runs", lambda r: r.runs_peak_rss_mb, False, 0, peak=True),
    Metric("peak RSS MiB, whole bench", lambda r: r.peak_rss_mb, False, 0, peak=True),
)
# Counts are context, not performance: no ratio for them.
_NO_RATIO = {"prompt tokens", "new tokens", "long prompt tokens"}


def render_table(results: list[EngineResult]) -> str:
    """A plain-text table of one round; the first result is ours, the others get ratios."""
    return render_rounds([results])


def render_rounds(rounds: Sequence[list[EngineResult]]) -> str:
    """The table over rounds of the same engines, in the same order in every round."""
    first = rounds[0]
    ours = first[0].engine
    names = [r.engine for r in first[1:] if not r.skipped]
    header = ["metric", ours]
    for name in names:
        header += [name, f"ours/{_short(name)}"]
    rows = [header]
    for metric in METRICS:
        row = [metric.label, _fmt(_across(rounds, ours, metric), metric)]
        for name in names:
            row.append(_fmt(_across(rounds, name, metric), metric))
            ratio = None if metric.label in _NO_RATIO else _round_ratio(rounds, name, metric)
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
    cached = _across(rounds, ours, _CACHED)
    uncached = _across(rounds, ours, _UNCACHED)
    if cached and uncached:
        out += f"\n\ncached-prefix TTFT / uncached TTFT (ours): {cached / uncached:.2f}"
    if len(rounds) > 1:
        for name in names:
            each = [_ratio(*_pair(r, ours, name, _DECODE)) for r in rounds]
            shown = " ".join("n/a" if x is None else f"{x:.2f}" for x in each)
            out += f"\ndecode ours/{_short(name)} in each of {len(rounds)} rounds: {shown}"
    for r in first:
        if r.skipped:
            out += f"\nskipped {r.engine}: {r.skipped}"
    out += "\nratios are ours/peer: above 1 is better for rates, below 1 for times and memory"
    if len(rounds) > 1:
        out += "\nvalues: medians over rounds (peaks: the highest); ratios: medians of each round's"
    return out


_DECODE = next(m for m in METRICS if m.label == "decode tok/s")
_CACHED = next(m for m in METRICS if m.label == "TTFT long, cached prefix ms")
_UNCACHED = next(m for m in METRICS if m.label == "TTFT long, uncached ms")


def _value(results: list[EngineResult], engine: str, metric: Metric) -> float | None:
    found = next((r for r in results if r.engine == engine and not r.skipped), None)
    return None if found is None else metric.value(found)


def _across(rounds: Sequence[list[EngineResult]], engine: str, metric: Metric) -> float | None:
    values = [v for r in rounds if (v := _value(r, engine, metric)) is not None]
    if not values:
        return None
    return max(values) if metric.peak else statistics.median(values)


def _pair(
    results: list[EngineResult], ours: str, peer: str, metric: Metric
) -> tuple[float | None, float | None]:
    return _value(results, ours, metric), _value(results, peer, metric)


def _round_ratio(rounds: Sequence[list[EngineResult]], peer: str, metric: Metric) -> float | None:
    if metric.peak:
        # A peak is compared peak to peak, not round by round.
        return _ratio(_across(rounds, rounds[0][0].engine, metric), _across(rounds, peer, metric))
    each = [x for r in rounds if (x := _ratio(*_pair(r, r[0].engine, peer, metric))) is not None]
    return statistics.median(each) if each else None


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    if mine is None or theirs is None or theirs == 0:
        return None
    return mine / theirs


def _fmt(value: float | None, metric: Metric) -> str:
    if value is None:
        return "n/a"
    if metric.scale is None:
        return f"{value:.{metric.digits}f}"
    return significant(value * metric.scale)


def significant(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits in plain notation: 0.000412 -> 0.000412,
    12.345 -> 12.3, 1234.7 -> 1235 (never rounds a positive time to zero)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    places = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{places}f}"


def _short(engine: str) -> str:
    return {"onnxruntime-genai": "genai", "llama.cpp": "llama"}.get(engine, engine)
