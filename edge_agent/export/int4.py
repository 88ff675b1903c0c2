"""Streaming blockwise int4 quantization: MatMulNBits for every MatMul, a shared int4 embedding.

Unlike onnxruntime's ``MatMulNBitsQuantizer`` this never loads the whole float model:
each weight is read from the external data file, quantized with onnxruntime's own
kernels and dropped. A tied embedding (Gemma's) is stored once: the LM head's int4
blocks also feed a ``GatherBlockQuantized`` lookup through a free ``Reshape``.

The head can be split by rows (``QuantSpec.head_int8_rows``): the first rows, the
tokenizer's most frequent pieces, at 8 bits and the rest at 4. On a 262k vocabulary
that keeps most of the int8 head's accuracy at about the int4 head's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import structlog
from onnx import helper, numpy_helper

from edge_agent.errors import ExportError
from edge_agent.export.onnx_export import MODEL_FILE, save_with_external_data
from edge_agent.export.progress import track
from edge_agent.export.rounding import quantize_int4
from edge_agent.export.spec import ROUNDINGS, QuantSpec

SourceBlocks = Callable[[str], "tuple[np.ndarray, np.ndarray, np.ndarray] | None"]

log = structlog.get_logger(__name__)

_MS = "com.microsoft"
# Small tensors (shape vectors, norm weights) stay in the graph file.
_INLINE_BYTES = 1024


@dataclass(slots=True)
class QuantReport:
    """What the quantizer changed."""

    matmuls: int = 0
    int8_matmuls: int = 0
    source_blocks: int = 0
    shared_embedding: bool = False
    head_int8_rows: int = 0
    gathers: int = 0
    float_bytes: int = 0
    quant_bytes: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Blocks:
    """Initializer names of one quantized weight, laid out ``[N, K]`` as MatMulNBits wants."""

    data: str
    scales: str
    zero_points: str | None
    n: int
    k: int
    bits: int


@dataclass(frozen=True, slots=True)
class _Split:
    """A head stored in two row ranges: ``top`` (the first ``top.n`` tokens) and ``rest``."""

    top: _Blocks
    rest: _Blocks


def quantize_folder(
    src_dir: Path,
    dst_dir: Path,
    spec: QuantSpec,
    *,
    int8_weights: frozenset[str] = frozenset(),
    source_blocks: SourceBlocks | None = None,
    importance: Mapping[str, np.ndarray] | None = None,
    progress: bool = True,
) -> QuantReport:
    """Quantize ``src_dir/model.onnx`` (float, external data) into ``dst_dir``.

    Weights named in ``int8_weights`` (initializer names) get 8 bits whatever ``spec`` says.
    ``source_blocks`` returns a weight's own 4-bit blocks (GGUF Q4_K): with block size 32
    they are stored as they are, float zero points included, instead of re-rounded.
    ``importance`` (weight name -> mean squared activation per input channel, from
    ``calibrate``) weights the scale search when ``spec.rounding`` is ``calibrated``.
    """
    if spec.block_size < 16 or spec.block_size & (spec.block_size - 1):
        raise ExportError(f"block size {spec.block_size} must be a power of two >= 16")
    if spec.head_bits not in (4, 8) or spec.bits not in (4, 8):
        raise ExportError(f"bits must be 4 or 8, not {spec.bits} (head {spec.head_bits})")
    if spec.head_int8_rows < 0 or (spec.head_int8_rows and spec.head_bits != 4):
        raise ExportError("head int8 rows apply to a 4-bit head: use --head-bits 4 and rows >= 0")
    if spec.rounding not in ROUNDINGS:
        raise ExportError(f"unknown rounding {spec.rounding!r}; use one of {', '.join(ROUNDINGS)}")
    if spec.rounding != "nearest" and not spec.symmetric:
        raise ExportError(f"{spec.rounding} rounding is for symmetric int4; drop --asymmetric")
    if spec.rounding == "calibrated" and not importance:
        raise ExportError("calibrated rounding needs the calibration's activation energies")
    model = onnx.load(str(src_dir / MODEL_FILE), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    weights = _matmul_weights(graph.node, inits, producers)
    embedded = {n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[0] in inits}
    report = QuantReport()
    blocks: dict[str, _Blocks] = {}
    splits: dict[str, _Split] = {}
    new_inits: list[onnx.TensorProto] = []
    replaced: dict[int, list[onnx.NodeProto]] = {}
    todo = [n for n in graph.node if id(n) in weights]
    for node in track(todo, total=len(todo), desc="int4", enabled=progress):
        name, transposed = weights[id(node)]
        is_head = name in embedded or "lm_head" in node.name
        bits = spec.head_bits if is_head else spec.bits
        if name in int8_weights:
            bits = 8
        own = None
        if name not in blocks and bits == 4 and transposed and source_blocks is not None:
            own = source_blocks(name) if spec.block_size == 32 and not is_head else None
        if own is not None:
            blocks[name], tensors = _from_source_blocks(name, *own)
            new_inits.extend(tensors)
            report.quant_bytes += sum(len(t.raw_data) for t in tensors)
            report.source_blocks += 1
        if name not in blocks and name not in splits:
            array = numpy_helper.to_array(inits[name], base_dir=str(src_dir))
            nk = array if transposed else array.T
            weight = importance.get(name) if importance else None
            # An explicit split also applies where the source stored the head at 8 bits.
            rows = spec.head_int8_rows if is_head and spec.head_bits == 4 else 0
            if 0 < rows < nk.shape[0]:
                top, top_tensors = _quantize(f"{name}_top", nk[:rows], spec, 8)
                rest, tensors = _quantize(f"{name}_rest", nk[rows:], spec, 4, weight)
                splits[name] = _Split(top, rest)
                tensors = top_tensors + tensors
                report.head_int8_rows = rows
            else:
                blocks[name], tensors = _quantize(name, nk, spec, 8 if rows else bits, weight)
            new_inits.extend(tensors)
            report.float_bytes += array.nbytes
            report.quant_bytes += sum(len(t.raw_data) for t in tensors)
        report.matmuls += 1
        if name in splits:
            replaced[id(node)] = _split_matmul(node, splits[name], spec)
            continue
        replaced[id(node)] = [_matmul_nbits(node, blocks[name], spec)]
        report.int8_matmuls += int(blocks[name].bits == 8)
    for node in graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits or not spec.quantize_embedding:
            continue
        name = node.input[0]
        if _gather_axis(node) != 0 or len(inits[name].dims) != 2:
            report.skipped.append(node.name)
            continue
        if name in splits:
            nodes, tensors = _split_gather(node, splits[name], spec)
            new_inits.extend(tensors)
            replaced[id(node)] = nodes
            report.gathers += 1
            report.shared_embedding = True
            continue
        shared = name in blocks
        if not shared:
            array = numpy_helper.to_array(inits[name], base_dir=str(src_dir))
            bits = 8 if name in int8_weights else spec.head_bits
            blocks[name], tensors = _quantize(name, array, spec, bits)
            new_inits.extend(tensors)
            report.float_bytes += array.nbytes
            report.quant_bytes += sum(len(t.raw_data) for t in tensors)
        nodes, tensors = _gather_block_quantized(
            node.input[1], list(node.output), node.name, blocks[name], spec
        )
        new_inits.extend(tensors)
        replaced[id(node)] = nodes
        report.gathers += 1
        report.shared_embedding |= shared
    if report.matmuls == 0:
        raise ExportError("int4 quantization changed no MatMul: is the graph's weight constant?")
    _rewrite(model, replaced, new_inits, src_dir)
    left = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    if left:
        raise ExportError(f"int4 quantization left float MatMuls: {', '.join(left)}")
    save_with_external_data(model, dst_dir, size_threshold=_INLINE_BYTES)
    log.info(
        "int4_quantized",
        matmuls=report.matmuls,
        shared_embedding=report.shared_embedding,
        block_size=spec.block_size,
        head_bits=spec.head_bits,
        path=str(dst_dir),
    )
    return report


def matmul_activations(graph: onnx.GraphProto) -> dict[str, str]:
    """Weight initializer -> the activation its MatMul multiplies, for every quantizable one.

    A MatMul fed by a Slice (the fused graph's LM head, which sees only the last
    position) maps to the Slice's input, so calibration sees every position.
    """
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    found: dict[str, str] = {}
    for node in graph.node:
        weight = _matmul_weights([node], inits, producers).get(id(node))
        if weight is None:
            continue
        activation = node.input[0]
        producer = producers.get(activation)
        if producer is not None and producer.op_type == "Slice":
            activation = producer.input[0]
        found.setdefault(weight[0], activation)
    return found


def _matmul_weights(
    nodes: Iterable[onnx.NodeProto],
    inits: dict[str, onnx.TensorProto],
    producers: dict[str, onnx.NodeProto],
) -> dict[int, tuple[str, bool]]:
    """MatMul node id -> (weight initializer, True if stored ``[N, K]`` behind a Transpose)."""
    found: dict[int, tuple[str, bool]] = {}
    for node in nodes:
        if node.op_type != "MatMul":
            continue
        b = node.input[1]
        if b in inits and len(inits[b].dims) == 2:
            found[id(node)] = (b, False)
            continue
        producer = producers.get(b)
        if producer is None or producer.op_type != "Transpose" or producer.input[0] not in inits:
            continue
        perm = next((list(a.ints) for a in producer.attribute if a.name == "perm"), [1, 0])
        if perm == [1, 0] and len(inits[producer.input[0]].dims) == 2:
            found[id(node)] = (producer.input[0], True)
    return found


def _quantize(
    name: str, nk: np.ndarray, spec: QuantSpec, bits: int, importance: np.ndarray | None = None
) -> tuple[_Blocks, list[onnx.TensorProto]]:
    """Blockwise-quantize a ``[N, K]`` weight along K.

    Symmetric int4 with a searched rounding goes through ``rounding``; everything else
    (nearest rounding, 8 bits, zero points) through onnxruntime's own kernels.
    """
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    n, k = nk.shape
    if k % spec.block_size:
        raise ExportError(f"{name}: K={k} is not a multiple of block size {spec.block_size}")
    zero_points: np.ndarray | None = None
    if bits == 4 and spec.symmetric and spec.rounding != "nearest":
        weight = importance if spec.rounding == "calibrated" else None
        packed, scales = quantize_int4(nk, spec.block_size, weight)
    else:
        n_blocks = k // spec.block_size
        packed = np.zeros((n, n_blocks, spec.block_size * bits // 8), dtype=np.uint8)
        scales = np.zeros((n, n_blocks), dtype=np.float32)
        points = np.zeros((n, (n_blocks * bits + 7) // 8), dtype=np.uint8)
        kn = np.ascontiguousarray(nk.T, dtype=np.float32)
        kernel = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
        kernel(packed, kn, scales, points, spec.block_size, n, k, spec.symmetric)
        zero_points = None if spec.symmetric else points
    tag = f"{name}_q{bits}"
    tensors = [
        numpy_helper.from_array(packed, f"{tag}_data"),
        numpy_helper.from_array(scales, f"{tag}_scales"),
    ]
    zp_name = None
    if zero_points is not None:
        zp_name = f"{tag}_zero_points"
        tensors.append(numpy_helper.from_array(zero_points, zp_name))
    return _Blocks(f"{tag}_data", f"{tag}_scales", zp_name, n, k, bits), tensors


def _from_source_blocks(
    name: str, q: np.ndarray, scale: np.ndarray, minimum: np.ndarray
) -> tuple[_Blocks, list[onnx.TensorProto]]:
    """MatMulNBits tensors holding ``w = scale * q - minimum`` exactly (float zero points)."""
    n, n_blocks, width = q.shape
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    safe = np.where(scale == 0, 1.0, scale)
    zero_points = np.where(scale == 0, 0.0, minimum / safe).astype(np.float32)
    tag = f"{name}_q4src"
    tensors = [
        numpy_helper.from_array(np.ascontiguousarray(packed), f"{tag}_data"),
        numpy_helper.from_array(np.ascontiguousarray(scale, dtype=np.float32), f"{tag}_scales"),
        numpy_helper.from_array(zero_points, f"{tag}_zero_points"),
    ]
    blocks = _Blocks(f"{tag}_data", f"{tag}_scales", f"{tag}_zero_points", n, n_blocks * width, 4)
    return blocks, tensors


def _matmul_nbits(
    node: onnx.NodeProto, b: _Blocks, spec: QuantSpec, suffix: str = ""
) -> onnx.NodeProto:
    """``node``'s MatMul on the blocks ``b``; a ``suffix`` renames its output (a split part)."""
    inputs = [node.input[0], b.data, b.scales] + ([b.zero_points] if b.zero_points else [])
    return helper.make_node(
        "MatMulNBits",
        inputs,
        [f"{out}{suffix}" for out in node.output],
        name=f"{node.name}{suffix}_Q{b.bits}",
        domain=_MS,
        K=b.k,
        N=b.n,
        bits=b.bits,
        block_size=spec.block_size,
        accuracy_level=spec.accuracy_level,
    )


def _split_matmul(node: onnx.NodeProto, split: _Split, spec: QuantSpec) -> list[onnx.NodeProto]:
    """The head as two MatMulNBits over its row ranges, joined along the vocabulary."""
    top = _matmul_nbits(node, split.top, spec, "_top")
    rest = _matmul_nbits(node, split.rest, spec, "_rest")
    join = helper.make_node(
        "Concat",
        [top.output[0], rest.output[0]],
        list(node.output),
        name=f"{node.name}_join",
        axis=-1,
    )
    return [top, rest, join]


def _split_gather(
    node: onnx.NodeProto, split: _Split, spec: QuantSpec
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The embedding lookup over a split head: each id reads the range that holds its row.

    Both ranges are looked up with clamped ids (two row reads per token), and ``Where``
    keeps the right one: cheaper than any branch for the few ids of a step.
    """
    ids, out, name, rows = node.input[1], node.output[0], node.name, split.top.n
    consts = {
        f"{name}_split_last": np.array(rows - 1, dtype=np.int64),
        f"{name}_split_rows": np.array(rows, dtype=np.int64),
        f"{name}_split_zero": np.array(0, dtype=np.int64),
        f"{name}_split_axis": np.array([-1], dtype=np.int64),
    }
    last, first, zero, axis = consts
    tensors = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    nodes = [
        helper.make_node("Min", [ids, last], [f"{name}_top_ids"], name=f"{name}_top_ids"),
        helper.make_node("Sub", [ids, first], [f"{name}_shifted"], name=f"{name}_shifted"),
        helper.make_node(
            "Max", [f"{name}_shifted", zero], [f"{name}_rest_ids"], name=f"{name}_rest_ids"
        ),
        helper.make_node("Less", [ids, first], [f"{name}_in_top"], name=f"{name}_in_top"),
        helper.make_node(
            "Unsqueeze", [f"{name}_in_top", axis], [f"{name}_pick"], name=f"{name}_pick"
        ),
    ]
    for part, b in (("top", split.top), ("rest", split.rest)):
        lookup, shapes = _gather_block_quantized(
            f"{name}_{part}_ids", [f"{out}_{part}"], f"{name}_{part}", b, spec
        )
        nodes += lookup
        tensors += shapes
    where = [f"{name}_pick", f"{out}_top", f"{out}_rest"]
    nodes.append(helper.make_node("Where", where, [out], name=f"{name}_join"))
    return nodes, tensors


def _gather_block_quantized(
    ids: str, outputs: list[str], name: str, b: _Blocks, spec: QuantSpec
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A lookup of ``ids`` into the ``[N, K]`` blocks: rows are tokens, K the hidden size.

    GatherBlockQuantized wants 2-D data where MatMulNBits wants 3-D; a Reshape bridges
    the two views of the same bytes (onnxruntime folds it at load time).
    """
    shape_name = f"{b.data}_rows_shape"
    flat = f"{b.data}_rows"
    shape = numpy_helper.from_array(np.array([b.n, b.k * b.bits // 8], dtype=np.int64), shape_name)
    reshape = helper.make_node("Reshape", [b.data, shape_name], [flat], name=f"{name}_rows")
    inputs = [flat, ids, b.scales] + ([b.zero_points] if b.zero_points else [])
    gather = helper.make_node(
        "GatherBlockQuantized",
        inputs,
        outputs,
        name=f"{name}_Q{b.bits}",
        domain=_MS,
        gather_axis=0,
        quantize_axis=1,
        block_size=spec.block_size,
        bits=b.bits,
    )
    return [reshape, gather], [shape]


def _gather_axis(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "axis"), 0)


def _rewrite(
    model: onnx.ModelProto,
    replaced: dict[int, list[onnx.NodeProto]],
    new_inits: list[onnx.TensorProto],
    src_dir: Path,
) -> None:
    """Swap nodes, drop dead Transposes and float weights, load the remaining small tensors."""
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.extend(replaced.get(id(node), [node]))
    # Transposes that only fed quantized MatMuls are dead now; drop them (repeat for chains).
    while True:
        used = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
        alive = [n for n in nodes if any(out in used for out in n.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    kept = [t for t in graph.initializer if t.name in used]
    for tensor in kept:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(src_dir))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    produced = {out for node in nodes for out in node.output}
    value_info = [v for v in graph.value_info if v.name in produced]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend([*kept, *new_inits])
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    if not any(op.domain == _MS for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS, 1))
