"""The benchmark child: measures one engine in a fresh process and prints one JSON line.

Each engine runs in its own process so its peak RSS is its own. Run as
``python -m edge_agent.bench.child ENGINE MODEL WORKLOAD.json --threads N``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.bench.engines import PeerMissing, run_llamacpp, run_ortgenai, run_ours
from edge_agent.bench.result import EngineResult
from edge_agent.bench.workload import Workload
from edge_agent.logs import configure_logging

ENGINES = ("edge-agent", "onnxruntime-genai", "llama.cpp")
SKIPPED_EXIT = 3


def main(argv: list[str] | None = None) -> int:
    """Measure one engine; exit 3 with a ``skipped`` result when its peer is missing."""
    parser = argparse.ArgumentParser(prog="edge_agent.bench.child")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("model", type=Path)
    parser.add_argument("workload", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=2048)
    args = parser.parse_args(argv)
    # stdout carries the result line; keep the runtime's info lines off it.
    configure_logging(level="warning", fmt="json")
    work = Workload.from_file(args.workload)
    try:
        if args.engine == "edge-agent":
            result = run_ours(args.model, args.threads, work, args.context)
        elif args.engine == "onnxruntime-genai":
            result = run_ortgenai(args.model, args.threads, work)
        else:
            result = run_llamacpp(args.model, args.threads, work, args.context)
    except PeerMissing as exc:
        print(EngineResult(engine=args.engine, skipped=str(exc)).to_json())
        return SKIPPED_EXIT
    print(result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
