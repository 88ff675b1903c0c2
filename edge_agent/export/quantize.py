"""Blockwise int4 weight quantization with onnxruntime's MatMulNBits quantizer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import structlog

from edge_agent.errors import ExportError
from edge_agent.export.onnx_export import MODEL_FILE, save_with_external_data

log = structlog.get_logger(__name__)

_QUANTIZER_LOGGER = "onnxruntime.quantization.matmul_nbits_quantizer"


@dataclass(frozen=True, slots=True)
class Int4Spec:
    """MatMulNBits settings; ``accuracy_level`` 4 computes with int8 activations on CPU."""

    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = True


def quantize_int4(src_dir: Path, dst_dir: Path, spec: Int4Spec) -> int:
    """Quantize every constant-weight MatMul (LM head included) of ``src_dir``'s model.

    Writes ``dst_dir/model.onnx`` + external data and returns how many MatMuls
    became MatMulNBits.
    """
    quantizer_cls = _import_quantizer()
    model = onnx.load(str(src_dir / MODEL_FILE))
    try:
        quantizer = quantizer_cls(
            model,
            bits=4,
            block_size=spec.block_size,
            is_symmetric=spec.symmetric,
            accuracy_level=spec.accuracy_level,
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise ExportError(f"int4 quantization failed: {exc}") from exc
    quantized: onnx.ModelProto = quantizer.model.model
    count = sum(1 for node in quantized.graph.node if node.op_type == "MatMulNBits")
    if count == 0:
        raise ExportError("int4 quantization changed no MatMul: is the graph's weight constant?")
    weights = {init.name for init in quantized.graph.initializer}
    # The LM head is the biggest MatMul of a small model; none may stay in float.
    left = [n.name for n in quantized.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    if left:
        raise ExportError(f"int4 quantization left float MatMuls: {', '.join(left)}")
    save_with_external_data(quantized, dst_dir)
    log.info("int4_quantized", matmuls=count, block_size=spec.block_size, path=str(dst_dir))
    return count


def _import_quantizer() -> Callable[..., Any]:
    """Import MatMulNBitsQuantizer without letting it reconfigure logging.

    The module calls ``logging.basicConfig(level=INFO)`` at import, which would add a
    root handler if none exists yet; a temporary NullHandler makes that a no-op. Its
    per-node INFO lines (thousands) are then turned down to warnings.
    """
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    finally:
        root.removeHandler(guard)
    logging.getLogger(_QUANTIZER_LOGGER).setLevel(logging.WARNING)
    quantizer_cls: Callable[..., Any] = MatMulNBitsQuantizer
    return quantizer_cls
