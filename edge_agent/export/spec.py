"""Quantization settings, importable without onnx (the cache key of prepared models uses them)."""

from __future__ import annotations

from dataclasses import dataclass

ROUNDINGS = ("nearest", "search", "calibrated")
"""How int4 scales may be chosen (``QuantSpec.rounding``)."""
KV_DTYPES = ("float32", "float16")
"""KV cache element types a fused graph can be exported with."""
DEFAULT_VERIFY_POSITIONS = 4
"""Positions the LM head scores per forward pass in a new export (drafting verifies
K-1 drafted tokens in one pass). It costs nothing without drafting: a one-token step
still computes one row. Chosen by measurement (models/README.md, "Drafting")."""


@dataclass(frozen=True, slots=True)
class QuantSpec:
    """MatMulNBits settings; ``accuracy_level`` 4 computes with int8 activations on CPU."""

    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = True
    head_bits: int = 4
    """Bits of the LM head (and the embedding it shares): 4, or 8 for quality."""
    head_int8_rows: int = 0
    """With a 4-bit head: its first rows at 8 bits. SentencePiece orders ids by piece score,
    so these are the most frequent tokens, where the argmax is decided; 0 = none."""
    quantize_embedding: bool = True
    """Quantize the token embedding (sharing the tied head's blocks); else keep it float."""
    bits: int = 4
    """Bits of every other MatMul (8 trades size and speed for accuracy)."""
    match_source: bool = True
    """Keep 8 bits for weights the source stores with 5 or more bits (GGUF Q5_0/Q6_K/Q8_0):
    re-rounding those to 4 bits stacks a second quantization error on the first."""
    rounding: str = "nearest"
    """int4 scales: ``nearest`` (the block's peak, as onnxruntime's quantizer), ``search``
    (least squared error over a grid), or ``calibrated`` (``search`` weighted by each
    input channel's mean squared activation over a calibration text)."""
    reuse_source_blocks: bool = False
    """Store a GGUF's Q4_K weights as they are (float zero points) instead of re-rounding.
    Exact, but onnxruntime 1.32 decodes float zero points about 2x slower on x86."""
