"""Runs each engine in its own child process and collects the results."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from edge_agent.bench.child import SKIPPED_EXIT
from edge_agent.bench.result import EngineResult
from edge_agent.bench.workload import Workload

log = structlog.get_logger(__name__)

# The folder holding the ``edge_agent`` package, so a peer venv can import the child.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Contender:
    """One engine to measure: which, on what model file or folder, with which Python."""

    engine: str
    model: Path
    python: str


def run_all(
    contenders: list[Contender],
    work: Workload,
    *,
    threads: int,
    context: int,
    timeout_s: float,
) -> list[EngineResult]:
    """Measure the contenders one after another (never concurrently: 2 cores)."""
    return run_rounds(
        contenders, work, rounds=1, threads=threads, context=context, timeout_s=timeout_s
    )[0]


def run_rounds(
    contenders: list[Contender],
    work: Workload,
    *,
    rounds: int,
    threads: int,
    context: int,
    timeout_s: float,
) -> list[list[EngineResult]]:
    """Every contender once per round; each round's results in the contenders' order.

    Every other round runs them in reverse order, so a machine that drifts faster or
    slower over the bench does not favour whichever engine goes first.
    """
    done: list[list[EngineResult]] = []
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as tmp:
        path = Path(tmp) / "workload.json"
        work.to_file(path)
        for number in range(rounds):
            order = list(contenders) if number % 2 == 0 else list(reversed(contenders))
            if rounds > 1:
                log.info("bench_round_started", round=number + 1, of=rounds)
            measured = {
                c.engine: run_child(c, path, threads=threads, context=context, timeout_s=timeout_s)
                for c in order
            }
            done.append([measured[c.engine] for c in contenders])
    return done


def run_child(
    contender: Contender, workload: Path, *, threads: int, context: int, timeout_s: float
) -> EngineResult:
    """One child process; a crash or timeout becomes a skipped row, not an exception."""
    args = ("--threads", str(threads), "--context", str(context))
    raw, why = launch_child(contender, "edge_agent.bench.child", workload, args, timeout_s)
    if raw is None:
        return EngineResult(engine=contender.engine, skipped=why)
    result = EngineResult(**raw)
    log.info("bench_engine_finished", engine=contender.engine, skipped=result.skipped or None)
    return result


def launch_child(
    contender: Contender,
    module: str,
    workload: Path,
    args: Sequence[str],
    timeout_s: float,
) -> tuple[dict[str, Any] | None, str]:
    """``python -m MODULE ENGINE MODEL WORKLOAD ARGS`` with the contender's Python: the
    last JSON object it printed for its engine, or None and why there is none."""
    command = [
        contender.python, "-m", module, contender.engine, str(contender.model), str(workload),
        *args,
    ]  # fmt: skip
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(_PACKAGE_ROOT), path) if p)}
    log.info("bench_engine_started", engine=contender.engine, model=str(contender.model))
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s:.0f} s"
    except OSError as exc:
        return None, f"cannot run {contender.python}: {exc}"
    if done.returncode in (0, SKIPPED_EXIT):  # exit 3: a skipped result, printed as usual
        for line in reversed(done.stdout.strip().splitlines()):
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            if isinstance(raw, dict) and raw.get("engine") == contender.engine:
                return raw, ""
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    return None, f"child exited with {done.returncode}: {tail or 'no output'}"
