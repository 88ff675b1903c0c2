"""The export path every model takes: weightless graph, streamed float weights, int4, manifest."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from edge_agent.errors import ExportError
from edge_agent.export.calibrate import activation_energy
from edge_agent.export.folder import ensure_new_folder, write_manifest
from edge_agent.export.fused import FusedWeights, build_fused_graph, fused_names
from edge_agent.export.graph import Graph, export_graph, write_float_model
from edge_agent.export.graph_options import apply_options
from edge_agent.export.int4 import QuantReport, quantize_folder
from edge_agent.export.progress import Steps
from edge_agent.export.sources import ModelSource
from edge_agent.export.spec import QuantSpec
from edge_agent.llm.manifest import Manifest, Quantization

log = structlog.get_logger(__name__)

_FLOAT = Quantization("none", 32, 0, 0, False)
GRAPHS = ("fused", "optimum")
"""Graph engines: ``fused`` is written directly with onnxruntime's fused contrib ops and
runs about twice as fast per token; ``optimum`` is traced from torch (the reference the
parity tests hold ``fused`` to, and the path for architectures ``fused`` lacks)."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """The folders written and what quantization did."""

    int4_dir: Path
    fp32_dir: Path | None
    manifest: Manifest
    report: QuantReport


def export_model(
    source: ModelSource,
    out_dir: Path,
    spec: QuantSpec,
    *,
    fp32_dir: Path | None = None,
    graph: str = "fused",
    progress: bool = True,
    verify_positions: int = 1,
    kv_dtype: str = "float32",
) -> ExportResult:
    """Export ``source`` to an int4 folder at ``out_dir`` (and a float one at ``fp32_dir``).

    ``verify_positions`` and ``kv_dtype`` are the int4 graph's run-time options
    (``graph_options.py``; fused graphs only); the float reference keeps the defaults.
    Each folder is assembled under a temporary name beside its target and renamed into
    place when complete, so a crash never leaves a folder that looks finished.
    """
    for target in (out_dir, fp32_dir):
        if target is not None:
            ensure_new_folder(target)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        result = _export_into(
            source,
            staging,
            spec,
            graph=graph,
            keep_fp32=fp32_dir is not None,
            progress=progress,
            options=(verify_positions, kv_dtype),
        )
        if fp32_dir is not None:
            _place(staging / "fp32", fp32_dir)
        _place(staging / "int4", out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out_dir, fp32_dir, result[0], result[1])


def _export_into(
    source: ModelSource,
    staging: Path,
    spec: QuantSpec,
    *,
    graph: str,
    keep_fp32: bool,
    progress: bool,
    options: tuple[int, str] = (1, "float32"),
) -> tuple[Manifest, QuantReport]:
    if graph not in GRAPHS:
        raise ExportError(f"unknown graph engine {graph!r}; use one of {', '.join(GRAPHS)}")
    verify_positions, kv_dtype = options
    if graph != "fused" and options != (1, "float32"):
        raise ExportError("--verify-positions and --kv-dtype need the fused graph")
    calibrate = spec.rounding == "calibrated"
    steps = Steps((4 if graph == "fused" else 5) + int(calibrate), enabled=progress)
    int8 = source.high_precision if spec.match_source else frozenset()
    own = source.int4_blocks if spec.reuse_source_blocks else None
    weights = source.weights
    if graph == "fused":
        if own is not None:
            raise ExportError("reusing the source's int4 blocks needs --graph optimum")
        steps("writing the fused ONNX graph")
        onnx_graph = build_fused_graph(source.config)
        weights = FusedWeights(weights)
        int8 = fused_names(int8)
    else:
        onnx_graph = _traced_graph(source, steps)
    steps("writing float weights")
    fp32, int4 = staging / "fp32", staging / "int4"
    write_float_model(onnx_graph, weights, fp32, progress=progress)
    importance = None
    if calibrate:
        steps("calibrating: activation energy per input channel")
        config = source.config
        importance = activation_energy(
            fp32,
            source.tokenizer,
            bos_token_id=int(config.bos_token_id),
            kv_shape=(int(config.num_key_value_heads), int(config.head_dim)),
            progress=progress,
        )
    steps("quantizing to int4 (MatMulNBits)")
    report = quantize_folder(
        fp32,
        int4,
        spec,
        int8_weights=int8,
        source_blocks=own,
        importance=importance,
        progress=progress,
    )
    if graph == "fused":
        apply_options(int4, verify_positions=verify_positions, kv_dtype=kv_dtype)
    steps("writing tokenizer and manifest")
    quant = Quantization(
        "matmul_nbits",
        spec.bits,
        spec.block_size,
        spec.accuracy_level,
        spec.symmetric,
        head_bits=spec.head_bits if spec.head_bits != spec.bits else None,
        shared_embedding=report.shared_embedding,
        int8_matmuls=report.int8_matmuls,
        head_int8_rows=report.head_int8_rows,
        rounding=spec.rounding,
    )
    folders = [(int4, quant)] + ([(fp32, _FLOAT)] if keep_fp32 else [])
    manifest = None
    for folder, q in folders:
        _write_tokenizer(source, folder)
        draft = replace(draft_manifest(source, q), graph=graph)
        if folder == int4:
            draft = replace(draft, verify_positions=verify_positions, kv_dtype=kv_dtype)
        written = write_manifest(folder, draft)
        manifest = manifest or written
    if not keep_fp32:
        shutil.rmtree(fp32)
    assert manifest is not None
    return manifest, report


def _traced_graph(source: ModelSource, steps: Steps) -> Graph:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_utils import no_init_weights

    steps("building the model skeleton")
    with no_init_weights():
        # Eager attention: SDPA drops Gemma 2's attention soft-cap from the trace.
        skeleton = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            source.config, attn_implementation="eager", dtype=torch.float32
        )
    steps("tracing the ONNX graph (optimum, eager attention)")
    return export_graph(skeleton.eval())


def draft_manifest(source: ModelSource, quant: Quantization) -> Manifest:
    """The manifest before checksums; ``write_manifest`` fills in files and tools."""
    config = source.config
    return Manifest(
        family=source.family,
        source=source.source,
        revision=source.revision,
        context_length=int(config.max_position_embeddings),
        bos_token_id=int(config.bos_token_id),
        eos_token_ids=source.eos_token_ids,
        pad_token_id=int(config.pad_token_id if config.pad_token_id is not None else 0),
        prompt_template=source.prompting.template,
        quantization=quant,
        files={},
        stop_strings=source.prompting.stop_strings,
        prompt_format="chat" if source.prompting.format == "chat" else "completion",
        num_layers=int(config.num_hidden_layers),
        num_kv_heads=int(config.num_key_value_heads),
        head_dim=int(config.head_dim),
    )


def _write_tokenizer(source: ModelSource, folder: Path) -> None:
    source.tokenizer.save(str(folder / "tokenizer.json"))
    for name, content in source.tokenizer_files.items():
        (folder / name).write_bytes(content)
    if "tokenizer_config.json" not in source.tokenizer_files:
        # Hugging Face tooling reads this; the runtime reads the manifest only.
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": source.tokenizer.id_to_token(int(source.config.bos_token_id)),
            "eos_token": source.tokenizer.id_to_token(source.eos_token_ids[0]),
            "add_bos_token": False,
            "add_eos_token": False,
            "model_max_length": int(source.config.max_position_embeddings),
        }
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        (folder / "tokenizer_config.json").write_text(text, encoding="utf-8")


def _place(staged: Path, target: Path) -> None:
    """Move a finished folder into place with shared-data permissions."""
    staged.chmod(0o755)
    for path in staged.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    if target.exists():
        target.rmdir()  # checked empty above
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staged), str(target))
