"""``edge-agent model ...``: build the tiny test model and verify model folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.errors import ExportError, ModelError
from edge_agent.llm.manifest import verify
from edge_agent.logs import configure_logging

BUILD_EPILOG = """\
examples:
  edge-agent model build-tiny                       # into $EDGE_AGENT_CACHE or ~/.cache/edge-agent
  edge-agent model build-tiny --out /tmp/models     # somewhere else
  MODEL=$(edge-agent model build-tiny | tail -n 1)  # the int4 folder is the last line

Builds a seeded random-weight Gemma 2 (a few MB) in well under a minute, exports it
with optimum, quantizes it to int4 and writes a verified model folder. A build that
already exists is reused. Needs the export extra: pip install 'edge-agent[export]'.
"""

VERIFY_EPILOG = """\
example:
  edge-agent model verify /var/lib/edge-agent/models/default

exit status: 0 when every file matches manifest.json, 1 otherwise
"""


def add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``model`` command group."""
    model = sub.add_parser("model", help="build and verify model folders")
    model_sub = model.add_subparsers(title="model commands", metavar="COMMAND", required=True)
    build = model_sub.add_parser(
        "build-tiny",
        help="build (or reuse) the tiny random-weight int4 Gemma 2; print its folder",
        description="Build the tiny random-weight Gemma 2 used by tests and the demo.",
        epilog=BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="cache folder to build under (default: $EDGE_AGENT_CACHE/models or "
        "~/.cache/edge-agent/models)",
    )
    build.set_defaults(handler=_build_tiny)
    check = model_sub.add_parser(
        "verify",
        help="check a model folder's files against its manifest.json",
        description="Check that every file listed in manifest.json exists with its sha256.",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("dir", type=Path, metavar="DIR", help="the model folder")
    check.set_defaults(handler=_verify)


def _build_tiny(args: argparse.Namespace) -> int:
    # Only warnings are logged, so the folder path stays the last line on stdout.
    configure_logging("warning", "console")
    from edge_agent.export.tiny import build_tiny_gemma2, default_cache_root

    root = args.out if args.out is not None else default_cache_root()
    try:
        tiny = build_tiny_gemma2(root)
    except ImportError as exc:
        # torch/optimum are the optional export extra; a cached build needs neither.
        print(
            f"edge-agent: cannot build models here ({exc.name or exc} is missing); "
            "install the export extra: pip install 'edge-agent[export]'",
            file=sys.stderr,
        )
        return 1
    except ExportError as exc:
        print(f"edge-agent: building the tiny model failed: {exc}", file=sys.stderr)
        return 1
    print(f"fp32: {tiny.fp32_dir}")
    print(tiny.int4_dir)
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        manifest = verify(args.dir)
    except ModelError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    quant = manifest.quantization
    print(f"OK {args.dir}")
    print(f"  model:    {manifest.family}:{manifest.source}@{manifest.files_digest}")
    print(f"  revision: {manifest.revision}")
    print(f"  context:  {manifest.context_length} tokens, format {manifest.prompt_format}")
    print(f"  weights:  {quant.method} {quant.bits}-bit, block {quant.block_size}")
    print(f"  files:    {len(manifest.files)} verified")
    return 0
