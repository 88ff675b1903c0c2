"""Run-time options of a fused graph, applied to its ``model.onnx`` after quantization.

Two options change what the graph computes without touching a weight, so they are a
pass over the small graph file (the weights stay in ``model.onnx.data``). The exporter
applies them, and ``retarget_folder`` applies them to a folder exported before:

- **verify positions K**: the LM head runs on the last K positions instead of the last
  one, so one forward pass over a decoded token plus K-1 drafted ones scores every
  draft (speculative decoding, ``llm/draft.py``). A forward pass of fewer than K
  tokens returns as many rows as it has tokens.
- **fp16 KV cache**: GroupQueryAttention runs in float16 (its CPU kernel's type
  constraint ties queries, keys, values, caches and rotary tables to one type), with
  casts around it; the cache's memory halves and everything else stays float32.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.errors import ExportError
from edge_agent.export.folder import ensure_new_folder, write_manifest
from edge_agent.export.spec import KV_DTYPES
from edge_agent.llm.manifest import MANIFEST_NAME, STAMP_NAME, Manifest

LAST_POSITION = "last_position"
"""Name of the fused graph's Slice that feeds the LM head (see ``fused.py``)."""
_VERIFY_START = "verify_positions_start"
_ROWS_DIM = "verify_rows"
_GQA_TENSOR_INPUTS = (0, 1, 2, 7, 8)  # query, key, value, cos, sin; 3/4 are the caches


def set_verify_positions(model: onnx.ModelProto, positions: int) -> None:
    """Make the LM head run on the last ``positions`` positions (1 = last only)."""
    if positions < 1:
        raise ExportError(f"verify positions must be at least 1, not {positions}")
    node = next((n for n in model.graph.node if n.name == LAST_POSITION), None)
    if node is None:
        raise ExportError("this graph has no last-position slice (not a fused graph)")
    start = numpy_helper.from_array(np.array([-positions], np.int64), _VERIFY_START)
    kept = [t for t in model.graph.initializer if t.name != _VERIFY_START]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, start])
    node.input[1] = _VERIFY_START
    logits = next(o for o in model.graph.output if o.name == "logits")
    dim = logits.type.tensor_type.shape.dim[1]
    if positions == 1:
        dim.dim_value = 1
    else:
        # min(sequence length, K) rows: symbolic.
        dim.dim_param = _ROWS_DIM


def set_kv_float16(model: onnx.ModelProto, folder: Path) -> None:
    """Run every GroupQueryAttention in float16 with a float16 KV cache.

    The rotary tables are graph constants (``folder`` holds their external data);
    they are stored again in float16 inside the graph file rather than cast per step.
    """
    graph = model.graph
    tables = {t.name: t for t in graph.initializer}
    half: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    found = False
    for node in graph.node:
        if node.op_type != "GroupQueryAttention":
            new_nodes.append(node)
            continue
        found = True
        for index in _GQA_TENSOR_INPUTS:
            name = node.input[index]
            if name not in half:
                if name in tables:
                    array = _read_float(tables[name], folder)
                    converted = f"{name}/fp16"
                    graph.initializer.append(
                        numpy_helper.from_array(array.astype(np.float16), converted)
                    )
                else:
                    converted = f"{name}/to_fp16"
                    new_nodes.append(
                        helper.make_node(
                            "Cast", [name], [converted], name=converted, to=TensorProto.FLOAT16
                        )
                    )
                half[name] = converted
            node.input[index] = half[name]
        output = node.output[0]
        node.output[0] = f"{output}/fp16"
        new_nodes.append(node)
        new_nodes.append(
            helper.make_node(
                "Cast", [node.output[0]], [output], name=f"{output}/to_fp32", to=TensorProto.FLOAT
            )
        )
    if not found:
        raise ExportError("this graph has no GroupQueryAttention: fp16 KV needs a fused graph")
    del graph.node[:]
    graph.node.extend(new_nodes)
    # The old float32 tables are no longer read.
    used = {name for n in graph.node for name in n.input}
    stale = [t for t in graph.initializer if t.name not in used]
    for tensor in stale:
        graph.initializer.remove(tensor)
    inputs = {i.name: i for i in graph.input}
    for name in list(inputs):
        if name not in used and name in tables:
            graph.input.remove(inputs[name])
    for value in [*graph.input, *graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.elem_type = TensorProto.FLOAT16


def _read_float(tensor: onnx.TensorProto, folder: Path) -> np.ndarray:
    """A float32 constant, inline or in external data.

    Read directly rather than through onnx, whose reader refuses a hard-linked data
    file (``retarget_folder`` links the weights instead of copying them).
    """
    if tensor.data_location != TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    info = {entry.key: entry.value for entry in tensor.external_data}
    offset, length = int(info.get("offset", 0)), int(info["length"])
    with (folder / info["location"]).open("rb") as fh:
        fh.seek(offset)
        raw = fh.read(length)
    return np.frombuffer(raw, dtype=np.float32).reshape(tuple(tensor.dims))


def apply_options(folder: Path, *, verify_positions: int = 1, kv_dtype: str = "float32") -> None:
    """Rewrite ``folder/model.onnx`` in place with the options (the manifest is the caller's)."""
    if kv_dtype not in KV_DTYPES:
        raise ExportError(f"KV cache type must be one of {', '.join(KV_DTYPES)}, not {kv_dtype}")
    path = folder / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    set_verify_positions(model, verify_positions)
    if kv_dtype == "float16":
        set_kv_float16(model, folder)
    # External-data references are kept as they are: only the graph file changes.
    onnx.save(model, str(path))


def retarget_folder(
    source: Path, out: Path, *, verify_positions: int, kv_dtype: str = "float32"
) -> Manifest:
    """Copy a fused model folder to ``out`` with other graph options; weights are shared.

    The weights file is hard-linked when the file system allows (it is only read), so
    a 1.6 GB folder is retargeted in seconds. The manifest is rewritten with fresh
    checksums and the new options.
    """
    manifest = Manifest.from_dir(source)
    if manifest.graph != "fused":
        raise ExportError(f"{source} is not a fused-graph folder (graph={manifest.graph})")
    if manifest.kv_dtype != "float32" and kv_dtype != manifest.kv_dtype:
        raise ExportError(
            f"{source} already has a {manifest.kv_dtype} KV cache; retarget its source"
        )
    ensure_new_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in manifest.files:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "model.onnx":
            shutil.copyfile(source / name, target)
            continue
        try:
            target.hardlink_to(source / name)
        except OSError:
            shutil.copyfile(source / name, target)
    # A float16 folder's graph already has its casts; only the head changes then.
    convert = kv_dtype if manifest.kv_dtype == "float32" else "float32"
    apply_options(out, verify_positions=verify_positions, kv_dtype=convert)
    for leftover in (out / STAMP_NAME, out / MANIFEST_NAME):
        leftover.unlink(missing_ok=True)
    return write_manifest(
        out, replace(manifest, verify_positions=verify_positions, kv_dtype=kv_dtype, files={})
    )
