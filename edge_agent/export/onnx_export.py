"""Export a causal LM to ONNX with optimum (text-generation-with-past, KV cache in/out)."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import structlog
from optimum.exporters.onnx import onnx_export_from_model
from torch.jit._trace import TracerWarning
from transformers import PreTrainedModel

from edge_agent.errors import ExportError

log = structlog.get_logger(__name__)

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"


def trace_with_optimum(
    model: PreTrainedModel, raw_dir: Path, *, fold_constants: bool = True
) -> None:
    """Trace ``model`` with optimum (``text-generation-with-past``) into ``raw_dir``.

    The one place both export paths (the tiny test model and ``model export``) call
    optimum. Post-processing (the merged decoder) is off: one graph that takes an empty
    past for prefill serves both prefill and decode, and it crashes above 2 GB.
    """
    if model.config._attn_implementation != "eager":
        # SDPA/flash paths drop Gemma 2's attention soft-cap; the export would look fine
        # and be numerically wrong.
        raise ExportError("export the model with attn_implementation='eager'")
    try:
        with warnings.catch_warnings():
            # Tracing warns about Python control flow on shapes; the parity tests
            # check the traced graph against torch at several lengths instead.
            warnings.simplefilter("ignore", TracerWarning)
            onnx_export_from_model(
                model,
                raw_dir,
                task="text-generation-with-past",
                no_post_process=True,
                do_validation=False,
                do_constant_folding=fold_constants,
            )
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise ExportError(f"optimum export failed: {exc}") from exc


def save_with_external_data(
    model: onnx.ModelProto, out_dir: Path, *, size_threshold: int = 0
) -> None:
    """Save the graph with all weights in one ``model.onnx.data`` file beside it.

    Real models exceed protobuf's 2 GB limit, so the runtime always loads external
    data; the tiny model uses the same layout to exercise that path. Tensors below
    ``size_threshold`` bytes stay inline, which shape inputs (e.g. of a ``Reshape``)
    must, for onnxruntime's shape inference to read them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(out_dir / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=size_threshold,
    )
