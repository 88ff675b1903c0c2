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

import os
from concurrent.futures import ThreadPoolExecutor

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
    """``[N, K]`` weights -> (packed ``[N, K/bs, bs/2]`` uint8, scales ``[N, K/bs]``).

    Row chunks are searched on every core: numpy releases the GIL inside each pass.
    """
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

    def chunk(start: int) -> None:
        w = np.asarray(nk[start : start + step], dtype=np.float32).reshape(-1, blocks, block_size)
        q, s = _search(w, weight)
        u = (q + 8).astype(np.uint8)
        packed[start : start + step] = u[..., 0::2] | (u[..., 1::2] << 4)
        scales[start : start + step] = s

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(chunk, range(0, n, step)))
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


class _Chunk:
    """One chunk's blocks ``[rows, blocks, bs]`` and scratch buffers reused by every pass.

    Fresh temporaries of a chunk's size on every pass cost more in page faults than
    the arithmetic, so each pass writes into the same two buffers.
    """

    def __init__(self, w: npt.NDArray[np.float32], weight: npt.NDArray[np.float32] | None):
        self.w = w
        self.weight = weight
        self.q = np.empty_like(w)
        self.tmp = np.empty_like(w)

    def levels(self, scale: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Nearest levels in [-8, 7] for ``scale`` ``[rows, blocks]`` (into ``self.q``)."""
        safe = np.where(scale == 0, np.float32(1), scale)[..., None]
        np.divide(self.w, safe, out=self.q)
        np.rint(self.q, out=self.q)
        np.clip(self.q, -8, 7, out=self.q)
        return self.q

    def refit(self, fallback: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The least-squares scale for the levels in ``self.q``."""
        q, tmp = self.q, self.tmp
        qw = q if self.weight is None else np.multiply(q, self.weight, out=tmp)
        num = (self.w * qw).sum(axis=-1)
        den = (q * qw).sum(axis=-1)
        scale: npt.NDArray[np.float32] = np.where(
            den > 0, num / np.where(den > 0, den, 1), fallback
        )
        return scale

    def error(self, scale: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Weighted squared error of the levels in ``self.q`` at ``scale``."""
        tmp = self.tmp
        np.multiply(self.q, scale[..., None], out=tmp)
        np.subtract(self.w, tmp, out=tmp)
        np.square(tmp, out=tmp)
        if self.weight is not None:
            np.multiply(tmp, self.weight, out=tmp)
        error: npt.NDArray[np.float32] = tmp.sum(axis=-1)
        return error


def _search(
    w: npt.NDArray[np.float32], weight: npt.NDArray[np.float32] | None
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Best (levels, scale) per block of ``w`` ``[rows, blocks, bs]``."""
    b = _Chunk(w, weight)
    peak = np.take_along_axis(w, np.abs(w).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    # The signed peak maps to -8, the one level with no positive twin (as onnxruntime).
    base = peak / -8.0
    b.levels(base)
    best_s, best_e = base, b.error(base)
    for factor in _GRID:
        for anchor in (base, peak / 7.0):
            b.levels(anchor * factor)
            s = b.refit(fallback=anchor * factor)
            b.levels(s)
            e = b.error(s)
            better = e < best_e
            best_e = np.where(better, e, best_e)
            best_s = np.where(better, s, best_s)
    return b.levels(best_s).astype(np.int8), best_s.astype(np.float32)
