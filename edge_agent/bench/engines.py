"""The three engines under test, each timed the same way; run inside a child process.

Every engine turns each new token into text as it goes, as an application streaming a
reply must: ours through ``generate`` (incremental detokenizing and the stop-string
scan), onnxruntime-genai through its ``TokenizerStream``, llama.cpp through
``detokenize``. Peer packages are imported inside their functions, so a missing one
costs only its own row (``PeerMissing``), and the device install never needs them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.bench.result import EngineResult, RunTimes, peak_rss_mb, summarise
from edge_agent.bench.workload import Workload
from edge_agent.llm.base import LogitsProcessor


class PeerMissing(Exception):
    """A peer's Python package or model file is not available."""


def mask_eos(eos_ids: Sequence[int]) -> LogitsProcessor:
    """A logits hook that never lets eos win: random-weight models hit eos at random, and
    masking it makes every run equally long."""
    eos = np.asarray(eos_ids, dtype=np.int64)

    def no_eos(
        generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        logits[eos] = -np.inf
        return logits

    return no_eos


def run_ours(model_dir: Path, threads: int, work: Workload, context: int) -> EngineResult:
    """Our ``OnnxGenerator``: load (no checksum pass), N runs, then the prefix-cache test."""
    from edge_agent.llm.base import GenerationRequest
    from edge_agent.llm.runtime import OnnxGenerator

    started = time.perf_counter()
    generator = OnnxGenerator.load(model_dir, threads=threads, verify=False, context_tokens=context)
    load_s = time.perf_counter() - started
    no_eos = mask_eos(generator.manifest.eos_token_ids)

    def once(text: str, new: int, prefix_chars: int = 0) -> RunTimes:
        request = GenerationRequest(
            text, max_new_tokens=new, prefix_chars=prefix_chars, logits_processor=no_eos
        )
        result = generator.generate(request)
        times = generator.last_times
        assert times is not None
        return RunTimes(result.prompt_tokens, times.prefill_s, result.new_tokens, times.decode_s)

    runs = [once(work.prompt_text, work.new_tokens) for _ in range(work.runs)]
    runs_peak = peak_rss_mb()
    long_text = work.prefix_text + work.suffix_text
    # Uncached first: once a prefix is kept, every later request would start from it.
    uncached = [once(long_text, 1) for _ in range(max(1, work.runs // 2))]
    once(long_text, 1, prefix_chars=len(work.prefix_text))
    cached = [
        once(long_text, 1, prefix_chars=len(work.prefix_text))
        for _ in range(max(1, work.runs // 2))
    ]
    return summarise(
        "edge-agent",
        generator.model_id,
        load_s,
        runs,
        ttft_uncached=[r.prefill_s for r in uncached],
        ttft_cached=[r.prefill_s for r in cached],
        long_prompt_tokens=uncached[0].prompt_tokens,
        runs_peak_rss_mb=runs_peak,
    )


def run_ortgenai(model_dir: Path, threads: int, work: Workload) -> EngineResult:
    """onnxruntime-genai's Generator API on its own builder's folder."""
    try:
        import onnxruntime_genai as og  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise PeerMissing(f"onnxruntime-genai is not installed ({exc})") from exc
    if not (model_dir / "genai_config.json").is_file():
        raise PeerMissing(f"{model_dir} has no genai_config.json (build it with the builder)")
    started = time.perf_counter()
    config = og.Config(str(model_dir))
    config.clear_providers()
    # The same thread count as ours, set the way genai_config.json would.
    session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
    model = og.Model(config)
    # Every engine loads its tokenizer: an application cannot run without one.
    tokenizer = og.Tokenizer(model)
    load_s = time.perf_counter() - started

    def once(ids: list[int], new: int) -> RunTimes:
        params = og.GeneratorParams(model)
        # min_length keeps a random-weight model from stopping early at eos.
        total = len(ids) + new
        params.set_search_options(do_sample=False, max_length=total, min_length=total)
        generator = og.Generator(model, params)
        stream = tokenizer.create_stream()
        t0 = time.perf_counter()
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        generator.generate_next_token()
        stream.decode(generator.get_next_tokens()[0])
        t1 = time.perf_counter()
        produced = 1
        while produced < new and not generator.is_done():
            generator.generate_next_token()
            stream.decode(generator.get_next_tokens()[0])
            produced += 1
        t2 = time.perf_counter()
        return RunTimes(len(ids), t1 - t0, produced, t2 - t1)

    once(work.prompt_ids[:8], 2)  # warm-up, as our load does
    runs = [once(work.prompt_ids, work.new_tokens) for _ in range(work.runs)]
    runs_peak = peak_rss_mb()
    long_ids = work.prefix_ids + work.suffix_ids
    uncached = [once(long_ids, 1) for _ in range(max(1, work.runs // 2))]
    return summarise(
        "onnxruntime-genai",
        f"{model_dir} (tokenizer {type(tokenizer).__name__})",
        load_s,
        runs,
        ttft_uncached=[r.prefill_s for r in uncached],
        ttft_cached=[],
        long_prompt_tokens=len(long_ids),
        runs_peak_rss_mb=runs_peak,
    )


def run_llamacpp(gguf: Path, threads: int, work: Workload, context: int) -> EngineResult:
    """llama.cpp through llama-cpp-python's low-level ``eval``, argmax with eos masked."""
    try:
        from llama_cpp import Llama  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise PeerMissing(f"llama-cpp-python is not installed ({exc})") from exc
    if not gguf.is_file():
        raise PeerMissing(f"GGUF file {gguf} does not exist")
    started = time.perf_counter()
    llm: Any = Llama(
        model_path=str(gguf),
        n_ctx=context,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    load_s = time.perf_counter() - started
    eos = int(llm.token_eos())

    def next_token() -> int:
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        logits[eos] = -np.inf
        return int(np.argmax(logits))

    def once(ids: list[int], new: int) -> RunTimes:
        # Without reset() llama-cpp-python keeps the last prompt and silently skips it.
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        token = next_token()
        llm.detokenize([token])
        t1 = time.perf_counter()
        for _ in range(new - 1):
            llm.eval([token])
            token = next_token()
            llm.detokenize([token])
        t2 = time.perf_counter()
        return RunTimes(len(ids), t1 - t0, new, t2 - t1)

    once(work.prompt_ids[:8], 2)
    runs = [once(work.prompt_ids, work.new_tokens) for _ in range(work.runs)]
    runs_peak = peak_rss_mb()
    long_ids = work.prefix_ids + work.suffix_ids
    uncached = [once(long_ids, 1) for _ in range(max(1, work.runs // 2))]
    return summarise(
        "llama.cpp",
        str(gguf),
        load_s,
        runs,
        ttft_uncached=[r.prefill_s for r in uncached],
        ttft_cached=[],
        long_prompt_tokens=len(long_ids),
        runs_peak_rss_mb=runs_peak,
    )
