"""One engine's benchmark numbers, as a child process reports them (pure)."""

from __future__ import annotations

import json
import resource
import statistics
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, slots=True)
class RunTimes:
    """One timed generation: prefill (to the first token) and decode."""

    prompt_tokens: int
    prefill_s: float
    new_tokens: int
    decode_s: float
    """From the first token to the last; covers ``new_tokens - 1`` forward passes."""


@dataclass(frozen=True, slots=True)
class EngineResult:
    """Medians over the runs, plus one-off costs; ``skipped`` explains a missing engine."""

    engine: str
    model: str = ""
    load_s: float = 0.0
    peak_rss_mb: float = 0.0
    """The whole child's peak, the long-prompt and prefix-cache tests included."""
    runs_peak_rss_mb: float = 0.0
    """The peak by the end of the timed runs (load, prompt, new tokens): the bar's figure."""
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_tok_s: float = 0.0
    decode_tok_s: float = 0.0
    ttft_s: float = 0.0
    ttft_uncached_s: float | None = None
    """First token of prefix + suffix, nothing cached."""
    ttft_cached_s: float | None = None
    """The same prompt with the prefix's KV cache kept from an earlier request."""
    long_prompt_tokens: int = 0
    runs: int = 0
    skipped: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """One JSON line (the child's stdout protocol)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EngineResult:
        """Parse ``to_json`` output."""
        return cls(**json.loads(text))


def summarise(
    engine: str,
    model: str,
    load_s: float,
    runs: list[RunTimes],
    *,
    ttft_uncached: list[float],
    ttft_cached: list[float],
    long_prompt_tokens: int,
    runs_peak_rss_mb: float,
    notes: list[str] | None = None,
) -> EngineResult:
    """Medians of the runs; the peak RSS is this process's, so call it in the child."""
    decode_rates = [(r.new_tokens - 1) / r.decode_s for r in runs if r.new_tokens > 1]
    return EngineResult(
        engine=engine,
        model=model,
        load_s=load_s,
        peak_rss_mb=peak_rss_mb(),
        runs_peak_rss_mb=runs_peak_rss_mb,
        prompt_tokens=runs[0].prompt_tokens,
        new_tokens=int(statistics.median(r.new_tokens for r in runs)),
        prefill_tok_s=statistics.median(r.prompt_tokens / r.prefill_s for r in runs),
        decode_tok_s=statistics.median(decode_rates) if decode_rates else 0.0,
        ttft_s=statistics.median(r.prefill_s for r in runs),
        ttft_uncached_s=statistics.median(ttft_uncached) if ttft_uncached else None,
        ttft_cached_s=statistics.median(ttft_cached) if ttft_cached else None,
        long_prompt_tokens=long_prompt_tokens,
        runs=len(runs),
        notes=notes or [],
    )


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
