"""int4 scale search and calibration: less error than nearest rounding, same MatMulNBits format."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.export.rounding import dequantize_int4, quantize_int4

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _weights(n: int = 96, k: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (n, k)).astype(np.float32)
    w[rng.random((n, k)) < 0.01] *= 12  # outliers, as trained weights have
    return w


def _nearest(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's own symmetric quantizer (what onnxruntime-genai's builder uses)."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    n, k = w.shape
    packed = np.zeros((n, k // block, block // 2), dtype=np.uint8)
    scales = np.zeros((n, k // block), dtype=np.float32)
    zero_points = np.zeros((n, (k // block + 1) // 2), dtype=np.uint8)
    quantize_matmul_4bits(packed, np.ascontiguousarray(w.T), scales, zero_points, block, n, k, True)
    return packed, scales


def test_dequantize_reads_onnxruntimes_layout() -> None:
    w = _weights()
    packed, scales = _nearest(w, 32)
    restored = dequantize_int4(packed, scales)
    peak = np.abs(w).reshape(96, 4, 32).max(-1).repeat(32, axis=1)
    # The peak maps to -8; a value just under the opposite peak clips to +7: one level.
    assert np.all(np.abs(restored - w) <= peak / 8 + 1e-6)


@pytest.mark.parametrize("block", [32, 128])
def test_search_has_less_squared_error_than_nearest(block: int) -> None:
    w = _weights()
    nearest = dequantize_int4(*_nearest(w, block))
    searched = dequantize_int4(*quantize_int4(w, block))
    assert ((searched - w) ** 2).sum() < 0.97 * ((nearest - w) ** 2).sum()


def test_calibration_weights_the_error_towards_busy_channels() -> None:
    w = _weights()
    energy = np.ones(128, dtype=np.float32)
    energy[::16] = 100.0  # a few channels carry most of the signal, as in Gemma
    plain = dequantize_int4(*quantize_int4(w, 128))
    weighted = dequantize_int4(*quantize_int4(w, 128, energy))

    def weighted_error(approx: np.ndarray) -> float:
        return float((((approx - w) ** 2) * energy).sum())

    assert weighted_error(weighted) < 0.8 * weighted_error(plain)


def test_searched_blocks_run_in_matmulnbits_as_dequantized() -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = _weights()
    packed, scales = quantize_int4(w, 32)
    node = helper.make_node(
        "MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft",
        K=128, N=96, bits=4, block_size=32, accuracy_level=0,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 96])],
        [numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scales, "s")],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(2, 128)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ dequantize_int4(packed, scales).T, rtol=1e-4, atol=1e-4)


def test_chunks_searched_in_parallel_give_the_same_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.export import rounding

    w = _weights(n=96)
    energy = np.linspace(1, 50, 128, dtype=np.float32)
    whole = quantize_int4(w, 32, energy)
    monkeypatch.setattr(rounding, "_CHUNK_VALUES", 128 * 7)  # 14 chunks of 7 rows
    chunked = quantize_int4(w, 32, energy)
    assert np.array_equal(whole[0], chunked[0])
    assert np.array_equal(whole[1], chunked[1])
