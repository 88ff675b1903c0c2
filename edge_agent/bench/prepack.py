"""Heap bytes per weight after MatMulNBits prepacking, and one-row speed, per accuracy level.

``python -m edge_agent.bench.prepack`` builds one int4 ``MatMulNBits`` node per shape
and accuracy level (random blocks, weights in external data as our folders keep
them), and prints one JSON line per shape and level:

- ``bytes_per_weight``: heap in use after creating the session, for N and 2N output
  rows, differenced, so the session's own overhead cancels (glibc ``mallinfo2``);
- ``one_row_ms``: median time of a one-row product, the levels alternating in one
  process so a noisy machine slows them alike.

It needs the ``export`` extra (``onnx``) and glibc.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

_SHAPES = {"gate_up": (2304, 9216), "down": (9216, 2304), "head": (2304, 256000)}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _node(folder: Path, k: int, n: int, level: int, block: int) -> ort.InferenceSession:
    """One MatMulNBits ``[1, m, k] x [k, n]`` with its weights in external data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    blocks = k // block
    data = rng.integers(0, 256, (n, blocks, block // 2), dtype=np.uint8)
    scales = (rng.random(n * blocks) * 0.01).astype(np.float32)
    node = helper.make_node(
        "MatMulNBits",
        ["A", "B", "S"],
        ["Y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=4,
        block_size=block,
        accuracy_level=level,
    )
    graph = helper.make_graph(
        [node],
        "one_matmul",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, "m", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, "m", n])],
        [numpy_helper.from_array(data, "B"), numpy_helper.from_array(scales, "S")],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    path = folder / f"k{k}_n{n}_l{level}.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=opsets),
        str(path),
        save_as_external_data=True,
        location=f"{path.name}.data",
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _prepacked_bytes(folder: Path, k: int, n: int, level: int, block: int) -> float:
    """Heap bytes per weight the session keeps (two sizes, differenced)."""
    held = []
    for rows in (n, 2 * n):
        before = _heap_in_use()
        session = _node(folder, k, rows, level, block)
        held.append(_heap_in_use() - before)
        del session
    return (held[1] - held[0]) / (k * n)


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per shape and accuracy level."""
    parser = argparse.ArgumentParser(prog="edge_agent.bench.prepack")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 1])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (k, n) in _SHAPES.items():
            sessions = {lv: _node(folder, k, n, lv, args.block_size) for lv in args.levels}
            row = np.random.default_rng(1).standard_normal((1, 1, k)).astype(np.float32)
            times: dict[int, list[float]] = {lv: [] for lv in args.levels}
            for i in range(args.rounds + 2):
                order = args.levels if i % 2 else args.levels[::-1]
                for level in order:
                    started = time.perf_counter()
                    sessions[level].run(None, {"A": row})
                    if i >= 2:  # the first rounds fault the mapped scales in
                        times[level].append(time.perf_counter() - started)
            del sessions
            for level in args.levels:
                line = {
                    "shape": name,
                    "k": k,
                    "n": n,
                    "block_size": args.block_size,
                    "accuracy_level": level,
                    "bytes_per_weight": round(
                        _prepacked_bytes(folder, k, n, level, args.block_size), 4
                    ),
                    "one_row_ms": round(1000 * statistics.median(times[level]), 3),
                }
                print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
