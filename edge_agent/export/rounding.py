"""Symmetric int4 blocks with searched scales, optionally weighted by activation energy (pure).

Round-to-nearest with the block's largest magnitude as the scale (onnxruntime's own
quantizer, and onnxruntime-genai's) wastes levels on one outlier. Here every block
tries a grid of scales around that one, refits each candidate's scale by least
squares, and keeps the one with the least squared error. With ``importance`` (the
mean squared activation of each input channel, from a calibration run) the error is
weighted per input channel, so the channels that carry the most signal into the
product are rounded most carefully: the expected error of ``x @ W`` is
``sum_k E[x_k^2] * dW_k^2``. The blocks are stored exactly as MatMulNBits and
GatherBlockQuantized read them (zero point 8, low nibble first).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Candidate scales, as multiples of the round-to-nearest scale.
_GRID = np.linspace(0.75, 1.05, 11, dtype=np.float32)
# Rows per chunk: keeps the float temporaries near 64 MB for any K.
_CHUNK_VALUES = 1 << 22


def quantize_int4(
    nk: npt.NDArray[np.floating],
    block_size: int,
    importance: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """``[N, K]`` weights -> (packed ``[N, K/bs, bs/2]`` uint8, scales ``[N, K/bs]``)."""
    n, k = nk.shape
    blocks = k // block_size
    weight = None
    if importance is not None:
        # A channel never seen active still counts a little: no weight is free to lose.
        floor = max(float(importance.mean()) * 1e-3, 1e-12)
        weight = np.maximum(importance.astype(np.float32), floor).reshape(1, blocks, block_size)
    packed = np.empty((n, blocks, block_size // 2), dtype=np.uint8)
    scales = np.empty((n, blocks), dtype=np.float32)
    step = max(1, _CHUNK_VALUES // k)
    for start in range(0, n, step):
        w = np.asarray(nk[start : start + step], dtype=np.float32).reshape(-1, blocks, block_size)
        q, s = _search(w, weight)
        u = (q + 8).astype(np.uint8)
        packed[start : start + step] = u[..., 0::2] | (u[..., 1::2] << 4)
        scales[start : start + step] = s
    return packed, scales


def dequantize_int4(
    packed: npt.NDArray[np.uint8], scales: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """The ``[N, K]`` weights that ``packed`` and ``scales`` stand for."""
    low = (packed & 15).astype(np.float32) - 8
    high = (packed >> 4).astype(np.float32) - 8
    q = np.stack([low, high], axis=-1).reshape(*packed.shape[:2], -1)
    values: npt.NDArray[np.float32] = (q * scales[..., None]).reshape(packed.shape[0], -1)
    return values


def _search(
    w: npt.NDArray[np.float32], weight: npt.NDArray[np.float32] | None
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Best (levels, scale) per block of ``w`` ``[rows, blocks, bs]``."""
    peak = np.take_along_axis(w, np.abs(w).argmax(axis=-1)[..., None], axis=-1)
    # The signed peak maps to -8, the one level with no positive twin (as onnxruntime).
    base = peak / -8.0
    best_q, best_s = _levels(w, base), base[..., 0]
    best_e = _error(w, best_q, best_s, weight)
    for factor in _GRID:
        for anchor in (base, peak / 7.0):
            q = _levels(w, anchor * factor)
            s = _refit(w, q, weight, fallback=anchor[..., 0] * factor)
            q = _levels(w, s[..., None])
            e = _error(w, q, s, weight)
            better = e < best_e
            best_e = np.where(better, e, best_e)
            best_s = np.where(better, s, best_s)
            best_q = np.where(better[..., None], q, best_q)
    return best_q.astype(np.int8), best_s.astype(np.float32)


def _levels(w: npt.NDArray[np.float32], scale: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    safe = np.where(scale == 0, np.float32(1), scale)
    levels: npt.NDArray[np.float32] = np.clip(np.rint(w / safe), -8, 7)
    return levels


def _refit(
    w: npt.NDArray[np.float32],
    q: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32] | None,
    *,
    fallback: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """The least-squares scale for fixed levels ``q``."""
    qw = q if weight is None else q * weight
    num = (w * qw).sum(axis=-1)
    den = (q * qw).sum(axis=-1)
    scale: npt.NDArray[np.float32] = np.where(den > 0, num / np.where(den > 0, den, 1), fallback)
    return scale


def _error(
    w: npt.NDArray[np.float32],
    q: npt.NDArray[np.float32],
    s: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32] | None,
) -> npt.NDArray[np.float32]:
    diff = w - q * s[..., None]
    sq = diff * diff
    error: npt.NDArray[np.float32] = (sq if weight is None else sq * weight).sum(axis=-1)
    return error
