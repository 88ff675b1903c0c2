"""Handlers of ``edge-agent model export|prepare|build-random|quality`` (need the export extra)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import EdgeAgentError
from edge_agent.export.progress import interactive
from edge_agent.logs import configure_logging

if TYPE_CHECKING:
    from edge_agent.export.spec import QuantSpec

EXTRA_HINT = "install the export extra: pip install 'edge-agent[export]'"


def quant_spec(args: argparse.Namespace) -> QuantSpec:
    """The ``QuantSpec`` from the ``--block-size``/``--accuracy-level``/... options."""
    from edge_agent.export.spec import QuantSpec

    return QuantSpec(
        block_size=args.block_size,
        accuracy_level=args.accuracy_level,
        symmetric=not args.asymmetric,
        head_bits=args.head_bits,
        head_int8_rows=args.head_int8_rows,
        bits=args.bits,
        match_source=not args.ignore_source_bits,
        rounding=args.rounding,
    )


def export(args: argparse.Namespace) -> int:
    """``model export SOURCE --out DIR``."""
    _logging()

    def run() -> Path:
        from edge_agent.export.folder import ensure_new_folder

        # Checked before torch is imported, so a wrong --out fails in a second.
        for target in (args.out, args.fp32_out):
            if target is not None:
                ensure_new_folder(target)
        from edge_agent.export.pipeline import export_model
        from edge_agent.export.sources import resolve

        source = resolve(args.source, revision=args.revision, dtype=args.dtype)
        result = export_model(
            source,
            args.out,
            quant_spec(args),
            fp32_dir=args.fp32_out,
            graph=args.graph,
            verify_positions=args.verify_positions,
            kv_dtype=args.kv_dtype,
        )
        if result.fp32_dir is not None:
            print(f"fp32: {result.fp32_dir}")
        return result.int4_dir

    return _run("exporting the model", run)


def prepare(args: argparse.Namespace) -> int:
    """``model prepare gemma3-270m [--out DIR]``."""
    _logging()

    def run() -> Path:
        from edge_agent.export.gemma3 import prepare_gemma3_270m
        from edge_agent.export.tiny import default_cache_root

        prepared = prepare_gemma3_270m(
            default_cache_root(),
            out_dir=args.out,
            keep_fp32=not args.no_fp32,
            graph=args.graph,
            progress=True,
        )
        if prepared.fp32_dir is not None:
            print(f"fp32: {prepared.fp32_dir}")
        return prepared.int4_dir

    return _run("preparing gemma3-270m", run)


def build_random(args: argparse.Namespace) -> int:
    """``model build-random --shape gemma-2-2b --out DIR``."""
    _logging()

    def run() -> Path:
        from edge_agent.export.random_model import build_random as build

        return build(
            args.shape,
            args.out,
            quant_spec(args),
            graph=args.graph,
            verify_positions=args.verify_positions,
            kv_dtype=args.kv_dtype,
        ).int4_dir

    return _run("building the random-weight model", run)


def retarget(args: argparse.Namespace) -> int:
    """``model retarget DIR --out NEW [--verify-positions K] [--kv-dtype float16]``."""
    _logging()

    def run() -> Path:
        from edge_agent.export.graph_options import retarget_folder

        retarget_folder(
            args.dir, args.out, verify_positions=args.verify_positions, kv_dtype=args.kv_dtype
        )
        return Path(args.out)

    return _run("retargeting the model folder", run)


def quality(args: argparse.Namespace) -> int:
    """``model quality --int4 DIR --fp32 DIR [--text FILE]``."""
    configure_logging("warning", "console")
    from edge_agent.export.quality import DEFAULT_TEXT, compare

    text_path = args.text or DEFAULT_TEXT
    try:
        text = text_path.read_text(encoding="utf-8")
        result = compare(args.int4, args.fp32, text, threads=args.threads)
    except OSError as exc:
        print(f"edge-agent: cannot read {text_path}: {exc}", file=sys.stderr)
        return 1
    except EdgeAgentError as exc:
        print(f"edge-agent: quality check failed: {exc}", file=sys.stderr)
        return 1
    print(result.line())
    return 0


def _logging() -> None:
    # On a terminal the bars and [n/N] lines are the progress; elsewhere (CI, pipes)
    # structlog step lines are. Logs go to stdout, the folder stays the last line.
    configure_logging("warning" if interactive() else "info", "console")


def _run(what: str, body: Callable[[], Path]) -> int:
    try:
        folder = body()
    except ImportError as exc:
        missing = exc.name or exc
        print(
            f"edge-agent: cannot build models here ({missing} is missing); {EXTRA_HINT}",
            file=sys.stderr,
        )
        return 1
    except EdgeAgentError as exc:
        print(f"edge-agent: {what} failed: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0
