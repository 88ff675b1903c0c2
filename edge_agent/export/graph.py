"""Export a decoder's ONNX graph without its weights, then fill weights in tensor by tensor.

A plain optimum export of Gemma 2 2B in fp32 holds the torch model, the traced
graph's weight copies and optimum's re-load of the external data at once (25-29 GB).
Here the graph is traced from a model whose parameters are free placeholders and
exported with ``export_params=False``, so weights become named graph inputs; the
real float weights are then streamed from their source into one external data file.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import structlog
import torch
from transformers import PreTrainedModel

from edge_agent.errors import ExportError
from edge_agent.export.onnx_export import DATA_FILE, MODEL_FILE, trace_with_optimum
from edge_agent.export.progress import track
from edge_agent.export.weights import Weights

log = structlog.get_logger(__name__)

RUNTIME_INPUTS = ("input_ids", "attention_mask", "position_ids")
_SIDECARS = ("config.json", "generation_config.json")
# External tensors start on this boundary so they can be memory-mapped.
_ALIGN = 4096


@dataclass(frozen=True, slots=True)
class Graph:
    """A weightless graph plus the real values of the model's buffers (rotary tables)."""

    model: onnx.ModelProto
    buffers: dict[str, np.ndarray]
    sidecars: dict[str, bytes]

    def weight_names(self) -> list[str]:
        """Graph inputs that are weights, not runtime feeds, in graph order."""
        return [i.name for i in self.model.graph.input if not _is_runtime_input(i.name)]


def export_graph(model: PreTrainedModel) -> Graph:
    """Trace ``model`` (eager attention, fp32) with optimum; no weight bytes are written.

    ``model`` is consumed: its parameters are replaced by placeholders.
    """
    model.tie_weights()  # type: ignore[no-untyped-call]
    buffers = {name: b.detach().float().numpy().copy() for name, b in model.named_buffers()}
    _use_placeholders(model)
    with tempfile.TemporaryDirectory(prefix="graph-") as tmp, _without_params():
        raw = Path(tmp)
        # Folding would lift traced constants into weightless inputs; onnxruntime folds
        # them at load time instead.
        trace_with_optimum(model, raw, fold_constants=False)
        graph = onnx.load(str(raw / MODEL_FILE))
        sidecars = {n: (raw / n).read_bytes() for n in _SIDECARS if (raw / n).is_file()}
    log.info("onnx_graph_exported", nodes=len(graph.graph.node), inputs=len(graph.graph.input))
    return Graph(graph, buffers, sidecars)


def write_float_model(
    graph: Graph, weights: Weights, out_dir: Path, *, progress: bool = True
) -> None:
    """Write ``model.onnx`` + ``model.onnx.data`` with every weight input as an initializer.

    Tensors are written one at a time, so peak memory is about one tensor.
    """
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    names = graph.weight_names()
    expected = {i.name: i for i in model.graph.input}
    out_dir.mkdir(parents=True, exist_ok=True)
    offset = 0
    with (out_dir / DATA_FILE).open("wb") as data:
        for name in track(names, total=len(names), desc="weights", enabled=progress):
            array = graph.buffers.get(name)
            if array is None:
                try:
                    array = weights.get(name)
                except KeyError as exc:
                    raise ExportError(f"the weight source has no tensor {name!r}") from exc
            _check_shape(name, array, expected[name])
            raw = np.ascontiguousarray(array, dtype=np.float32).tobytes()
            pad = -offset % _ALIGN
            data.write(b"\0" * pad)
            offset += pad
            data.write(raw)
            tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT)
            tensor.dims.extend(array.shape)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", DATA_FILE), ("offset", offset), ("length", len(raw))):
                tensor.external_data.add(key=key, value=str(value))
            model.graph.initializer.append(tensor)
            offset += len(raw)
    keep = [i for i in model.graph.input if _is_runtime_input(i.name)]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    onnx.save_model(model, str(out_dir / MODEL_FILE))
    for name, content in graph.sidecars.items():
        (out_dir / name).write_bytes(content)
    log.info("float_model_written", path=str(out_dir), tensors=len(names), bytes=offset)


def _is_runtime_input(name: str) -> bool:
    return name in RUNTIME_INPUTS or name.startswith("past_key_values.")


def _check_shape(name: str, array: np.ndarray, proto: onnx.ValueInfoProto) -> None:
    dims = [d.dim_value for d in proto.type.tensor_type.shape.dim]
    if list(array.shape) != dims:
        raise ExportError(f"weight {name} has shape {list(array.shape)}, the graph wants {dims}")


def _use_placeholders(model: PreTrainedModel) -> None:
    """Replace every parameter with a distinct, zero-memory constant of the same shape.

    Values must differ per tensor: the exporter merges parameters it finds equal.
    """
    with torch.no_grad():
        for i, param in enumerate(model.parameters()):
            param.data = torch.full((1,), float(i + 1)).expand(param.shape)


@contextlib.contextmanager
def _without_params() -> Iterator[None]:
    """Make optimum's ``torch.onnx.export`` call trace without writing weights.

    optimum has no switch for ``export_params``; it imports ``torch.onnx.export`` at
    call time, so a scoped replacement reaches it. Without this the exporter writes
    every weight and optimum reloads them all to merge external data files.
    """
    original = torch.onnx.export
    torch.onnx.export = functools.partial(original, export_params=False)
    try:
        yield
    finally:
        torch.onnx.export = original
