"""The ``bench narration --speed`` child: one engine over the narration requests, one JSON line.

Run as ``python -m edge_agent.bench.speed_child ENGINE MODEL WORKLOAD.json --threads N``.
Each engine runs in its own process (and, for peers, possibly another venv), so this
module imports only the standard library and numpy at the top; engines import their
packages inside their functions, and a missing one reports ``skipped``.

Every engine gets the same requests, greedy, with the same stop strings and token
budget, and turns tokens into text as it goes, as a streaming application must. It
first runs the first request once untimed (our runtime's load does the same warm-up,
and a kept prefix or a reused llama.cpp context then serves every request alike).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ENGINES = (
    "ours-draft",
    "ours-plain",
    "ours-pairs",
    "llama.cpp",
    "llama.cpp-lookup",
    "onnxruntime-genai",
)
LOOKUP_TOKENS = 4
"""llama.cpp's drafted tokens per step (the issue measured 4 and 10; 4 was faster)."""
SKIPPED_EXIT = 3


class PeerMissing(Exception):
    """A peer's package or model file is not available."""


def _ours(model: Path, threads: int, work: dict[str, Any], *, mode: str) -> list[dict[str, Any]]:
    """``ours-draft``: drafting on; ``ours-plain``: off, one row per pass (the runtime
    before drafting, the speed reference); ``ours-pairs``: off, two rows per pass (the
    kernel drafting uses: the identical-text reference)."""
    from edge_agent.llm.base import GenerationRequest
    from edge_agent.llm.draft import DraftConfig
    from edge_agent.llm.runtime import OnnxGenerator

    config = DraftConfig(enabled=mode == "ours-draft", pairs=mode == "ours-pairs")
    generator = OnnxGenerator.load(model, threads=threads, verify=False, draft=config)

    def once(case: dict[str, Any]) -> dict[str, Any]:
        request = GenerationRequest(
            case["prompt"],
            max_new_tokens=case["max_new_tokens"],
            stop=tuple(case["stop"]),
            prefix_chars=case["prefix_chars"],
        )
        result = generator.generate(request)
        times = generator.last_times
        assert times is not None
        return {
            "kind": case["kind"],
            "latency_s": result.latency_s,
            "new_tokens": result.new_tokens,
            "decode_s": times.decode_s,
            "text": result.text,
            "verify_steps": times.verify_steps,
            "drafted": times.drafted_tokens,
            "accepted": times.accepted_tokens,
        }

    cases = work["cases"]
    once(cases[0])
    # The timed requests start from no remembered output, as after a restart; the
    # warm-up's own text would otherwise draft the first timed request whole.
    generator.forget_drafts()
    return [once(case) for case in cases]


def _llamacpp(
    gguf: Path, threads: int, work: dict[str, Any], *, lookup: bool
) -> list[dict[str, Any]]:
    try:
        from llama_cpp import Llama  # type: ignore[import-not-found,unused-ignore]
        from llama_cpp.llama_speculative import (  # type: ignore[import-not-found,unused-ignore]
            LlamaPromptLookupDecoding,
        )
    except ImportError as exc:
        raise PeerMissing(f"llama-cpp-python is not installed ({exc})") from exc
    if not gguf.is_file():
        raise PeerMissing(f"GGUF file {gguf} does not exist")
    draft = LlamaPromptLookupDecoding(num_pred_tokens=LOOKUP_TOKENS) if lookup else None
    llm: Any = Llama(
        model_path=str(gguf),
        n_ctx=work["context"],
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
        draft_model=draft,
    )

    def once(case: dict[str, Any]) -> dict[str, Any]:
        ids = case["ids"]
        started = time.perf_counter()
        first = None
        pieces = []
        # llama-cpp-python keeps the longest common prefix of the last prompt in its
        # context, its own form of a prefix cache.
        for chunk in llm.create_completion(
            prompt=ids,
            max_tokens=case["max_new_tokens"],
            temperature=0.0,
            top_k=1,
            repeat_penalty=1.0,
            stop=case["all_stops"],
            stream=True,
        ):
            if first is None:
                first = time.perf_counter()
            pieces.append(chunk["choices"][0]["text"])
        ended = time.perf_counter()
        new = max(int(llm.n_tokens) - len(ids) + 1, 1)
        return {
            "kind": case["kind"],
            "latency_s": ended - started,
            "new_tokens": new,
            "decode_s": ended - (first or ended),
            "text": "".join(pieces),
        }

    cases = work["cases"]
    once(cases[0])
    return [once(case) for case in cases]


def _ortgenai(folder: Path, threads: int, work: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        import numpy as np
        import onnxruntime_genai as og  # type: ignore[import-not-found,unused-ignore]
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise PeerMissing(f"onnxruntime-genai or tokenizers is not installed ({exc})") from exc
    if not (folder / "genai_config.json").is_file():
        raise PeerMissing(f"{folder} has no genai_config.json")
    config = og.Config(str(folder))
    config.clear_providers()
    session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
    model = og.Model(config)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def once(case: dict[str, Any]) -> dict[str, Any]:
        ids = case["ids"]
        stops = case["all_stops"]
        started = time.perf_counter()
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + case["max_new_tokens"])
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        new: list[int] = []
        text, first = "", None
        while not generator.is_done() and len(new) < case["max_new_tokens"]:
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            first = first or time.perf_counter()
            if token in work["eos"]:
                break
            new.append(token)
            # Decoding the short tail each step, as a streaming reply must.
            text = tokenizer.decode(new, skip_special_tokens=True)
            cut = [i for s in stops if (i := text.find(s)) >= 0]
            if cut:
                text = text[: min(cut)]
                break
        ended = time.perf_counter()
        return {
            "kind": case["kind"],
            "latency_s": ended - started,
            "new_tokens": len(new),
            "decode_s": ended - (first or ended),
            "text": text,
        }

    cases = work["cases"]
    once(cases[0])
    return [once(case) for case in cases]


def main(argv: list[str] | None = None) -> int:
    """Measure one engine; exit 3 with ``skipped`` when its peer is missing."""
    parser = argparse.ArgumentParser(prog="edge_agent.bench.speed_child")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("model", type=Path)
    parser.add_argument("workload", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    work = json.loads(args.workload.read_text(encoding="utf-8"))
    try:
        if args.engine.startswith("ours"):
            from edge_agent.logs import configure_logging

            # stdout carries the result line; keep the runtime's info lines off it.
            configure_logging(level="warning", fmt="json")
            runs = _ours(args.model, args.threads, work, mode=args.engine)
        elif args.engine.startswith("llama.cpp"):
            runs = _llamacpp(args.model, args.threads, work, lookup=args.engine.endswith("lookup"))
        else:
            runs = _ortgenai(args.model, args.threads, work)
    except PeerMissing as exc:
        print(json.dumps({"engine": args.engine, "skipped": str(exc), "runs": []}))
        return SKIPPED_EXIT
    print(json.dumps({"engine": args.engine, "skipped": "", "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
