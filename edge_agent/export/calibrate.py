"""Calibration for int4 rounding: each MatMul input channel's mean squared activation.

The float export runs over a short packaged text (``data/calibration.txt``: mixed
English prose, instructions, numbers and sensor notes; deliberately not the quality
text, so ``model quality`` is not scored on what calibration saw). The graph is edited
in memory so every quantizable MatMul's activation input is also an output; for the
LM head, which only sees the last position, the input before that slice is read, so
every position counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import structlog
from tokenizers import Tokenizer

from edge_agent.errors import ExportError
from edge_agent.export.int4 import matmul_activations
from edge_agent.export.onnx_export import MODEL_FILE
from edge_agent.export.progress import track

log = structlog.get_logger(__name__)

CALIBRATION_TEXT = Path(__file__).resolve().parent / "data" / "calibration.txt"
# Tokens per forward pass: each paragraph-sized chunk is its own sequence.
_CHUNK = 256


def activation_energy(
    float_dir: Path,
    tokenizer: Tokenizer,
    *,
    bos_token_id: int,
    kv_shape: tuple[int, int],
    threads: int = 2,
    text: str | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Weight initializer name -> ``E[x_k^2]`` over its input channels ``k``.

    ``kv_shape`` is (KV heads, head dim), for the empty past of each chunk.
    """
    model = onnx.load(str(float_dir / MODEL_FILE), load_external_data=False)
    sources = matmul_activations(model.graph)
    if not sources:
        raise ExportError("calibration found no MatMul with a constant weight")
    wanted = sorted(set(sources.values()))
    present = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in present:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Prepacking would copy every float weight onto the heap (10 GB for Gemma 2 2B);
    # unpacked, the session reads them from the page cache of the mapped data file.
    options.add_session_config_entry("session.disable_prepacking", "1")
    options.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", str(float_dir)
    )
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises bare pybind exceptions
        raise ExportError(f"cannot run the float export for calibration: {exc}") from exc
    inputs = {i.name for i in session.get_inputs()}
    heads, dim = kv_shape
    empty = np.zeros((1, heads, 0, dim), dtype=np.float32)
    past = {n: empty for n in inputs if n.startswith("past_key_values.")}
    calibration = text or CALIBRATION_TEXT.read_text(encoding="utf-8")
    body = tokenizer.encode(calibration, add_special_tokens=False).ids
    chunks = [body[i : i + _CHUNK - 1] for i in range(0, len(body), _CHUNK - 1)]
    sums: dict[str, np.ndarray] = {}
    seen = 0
    for chunk in track(chunks, total=len(chunks), desc="calibration", enabled=progress):
        ids = [bos_token_id, *chunk]
        feeds = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            **past,
        }
        if "position_ids" in inputs:
            feeds["position_ids"] = np.arange(len(ids), dtype=np.int64)[None]
        for name, value in zip(wanted, session.run(wanted, feeds), strict=True):
            rows = value.reshape(-1, value.shape[-1]).astype(np.float64)
            sums[name] = sums.get(name, 0.0) + (rows * rows).sum(axis=0)
        seen += len(ids)
    log.info("calibrated", tokens=seen, matmuls=len(sources))
    return {w: (sums[a] / seen).astype(np.float32) for w, a in sources.items()}
