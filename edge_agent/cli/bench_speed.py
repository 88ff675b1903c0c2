"""``edge-agent bench narration --speed``: our runtime with and without drafting, and peers."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from edge_agent.errors import ConfigError, ModelError

_DEFAULT_PEER_VENV = Path.home() / ".cache" / "edge-agent" / "bench-venv" / "bin" / "python"


def speed(args: argparse.Namespace) -> int:
    """Build the requests, run every engine per round, print the table (and JSON)."""
    from edge_agent.bench.runner import Contender
    from edge_agent.bench.speed import render, run_rounds, summarise, workload
    from edge_agent.logs import configure_logging

    if args.rounds < 1 or args.speed_windows < 1:
        raise ConfigError("--rounds and --speed-windows must be at least 1")
    configure_logging("warning", "console")
    work = workload(
        args.model,
        windows=args.speed_windows,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        ask_max_new_tokens=args.ask_max_new_tokens,
    )
    ours = sys.executable
    contenders = [
        Contender("ours-draft", args.model, ours),
        Contender("ours-plain", args.model, ours),
        Contender("ours-pairs", args.model, ours),
    ]
    with tempfile.TemporaryDirectory(prefix="edge-agent-genai-") as tmp:
        if not args.no_peers:
            python = args.peer_python or (
                str(_DEFAULT_PEER_VENV) if _DEFAULT_PEER_VENV.is_file() else sys.executable
            )
            gguf = args.gguf or Path("missing.gguf")
            genai = args.genai_model or _genai_folder(args.model, Path(tmp) / "genai")
            contenders += [
                Contender("llama.cpp", gguf, python),
                Contender("llama.cpp-lookup", gguf, python),
                Contender("onnxruntime-genai", genai, python),
            ]
        rounds = run_rounds(
            contenders,
            work,
            rounds=args.rounds,
            threads=args.threads,
            timeout_s=args.timeout,
            on_result=_progress,
        )
    for number, measured in enumerate(rounds, 1):
        if measured["ours-draft"].get("skipped"):
            raise ModelError(
                f"our runtime failed in round {number}: {measured['ours-draft']['skipped']}"
            )
    summary = summarise(rounds, [c.engine for c in contenders])
    print(f"model={args.model} threads={args.threads} rounds={args.rounds}")
    print(render(summary, len(work["cases"])))
    if args.json:
        print(json.dumps(summary))
    return 0


def _genai_folder(model: Path, out: Path) -> Path:
    """Our folder with its head on the last position and a genai_config.json."""
    from edge_agent.bench.speed import write_genai_config
    from edge_agent.export.graph_options import retarget_folder

    retarget_folder(model, out, verify_positions=1)
    write_genai_config(out)
    return out


def _progress(number: int, result: dict[str, object]) -> None:
    if sys.stderr.isatty():
        state = f"skipped: {result['skipped']}" if result.get("skipped") else "done"
        print(f"round {number}: {result['engine']} {state}", file=sys.stderr, flush=True)
