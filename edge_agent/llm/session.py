"""onnxruntime session creation, its native log routing, and the KV-cache tensor layout."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import structlog

from edge_agent.errors import ModelError
from edge_agent.llm.manifest import Manifest

log = structlog.get_logger(__name__)

_PAST_PREFIX = "past_key_values."
_PRESENT_PREFIX = "present."
# The logits' row dim of a graph exported with verify positions > 1 (graph_options.py).
_VERIFY_ROWS = "verify_rows"
_DTYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Capture what native code writes to fd 2 meanwhile and re-emit it through structlog.

    onnxruntime's C++ logger writes straight to fd 2, bypassing Python, so under
    systemd its lines would not be JSON. Anything another thread writes to stderr
    in this window is captured too; session creation is short, so that is acceptable.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for raw in sink.read().decode("utf-8", "replace").splitlines():
                if raw.strip():
                    log.info("onnxruntime_log", line=raw.rstrip())


def open_session(
    model_path: Path,
    *,
    threads: int,
    provider: str,
    log_severity: int = 2,
    fold_constants: bool = True,
) -> ort.InferenceSession:
    """Create an InferenceSession; external data next to ``model_path`` is found by ORT.

    ``fold_constants=False`` suits graphs with nothing left to fold (the fused export):
    folding would only turn the embedding's Reshape of the head's int4 blocks into a
    second in-memory copy of them (~300 MB on Gemma 2 2B) and slow the load.
    """
    available = ort.get_available_providers()
    if provider not in available:
        raise ModelError(
            f"onnxruntime provider {provider} is not available here "
            f"(available: {', '.join(available)}); set model.provider accordingly"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One generation at a time: inter-op parallelism only adds idle threads.
    options.inter_op_num_threads = 1
    options.log_severity_level = log_severity
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not fold_constants:
        options.add_session_config_entry(
            "optimization.disable_specified_optimizers", "ConstantFolding"
        )
    try:
        with native_stderr_to_log():
            return ort.InferenceSession(str(model_path), options, providers=[provider])
    # onnxruntime's pybind errors (Fail, InvalidGraph, NoSuchFile, ...) share no base
    # class below Exception, so the boundary has to catch that.
    except Exception as exc:
        raise ModelError(f"onnxruntime cannot load {model_path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PrefixCache:
    """The KV cache of a prompt head, kept between requests."""

    ids: tuple[int, ...]
    past: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class KvLayout:
    """Names and shapes of the graph's cache inputs, read from the graph itself."""

    past_names: tuple[str, ...]
    present_to_past: dict[str, str]
    kv_heads: int
    head_dim: int
    dtype: type[np.floating[Any]]
    has_position_ids: bool
    output_names: tuple[str, ...]
    shared_buffer: bool = False
    """The graph's attention (GroupQueryAttention) can append into a fixed past buffer."""
    last_logits_only: bool = False
    """The graph emits logits for the last position only (shape ``[batch, 1, vocab]``)."""
    vocab_size: int | None = None
    logit_rows: int | None = None
    """Positions the graph scores per forward pass, counted from the last: 1 (last only),
    K (a graph exported with verify positions K), or None (every position)."""

    @classmethod
    def from_session(
        cls, session: ort.InferenceSession, manifest: Manifest, *, shared_buffer: bool = False
    ) -> KvLayout:
        """Inspect inputs/outputs; fall back to the manifest for symbolic head dims.

        ``shared_buffer`` says the graph's attention op supports one buffer bound as
        both past and present (see ``uses_group_query_attention``).
        """
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = tuple(o.name for o in session.get_outputs())
        missing = {"input_ids", "attention_mask"} - inputs.keys()
        if missing or "logits" not in outputs:
            raise ModelError(
                f"model.onnx lacks {sorted(missing) or ['logits']}: it is not a "
                "text-generation-with-past export"
            )
        past = tuple(n for n in inputs if n.startswith(_PAST_PREFIX))
        if not past:
            raise ModelError("model.onnx has no past_key_values inputs: export with KV cache")
        mapping = {n: _PAST_PREFIX + n[len(_PRESENT_PREFIX) :] for n in outputs}
        mapping = {k: v for k, v in mapping.items() if k.startswith(_PRESENT_PREFIX)}
        if sorted(mapping.values()) != sorted(past):
            raise ModelError("model.onnx present.* outputs do not match its past_key_values.*")
        first = inputs[past[0]]
        kv_heads = _static(first.shape, 1, manifest.num_kv_heads, "num_kv_heads")
        head_dim = _static(first.shape, 3, manifest.head_dim, "head_dim")
        dtype = _DTYPES.get(first.type)
        if dtype is None:
            raise ModelError(f"unsupported KV cache type {first.type} in model.onnx")
        logits_shape = next(o.shape for o in session.get_outputs() if o.name == "logits")
        vocab = logits_shape[-1] if len(logits_shape) == 3 else None
        last_only = len(logits_shape) == 3 and logits_shape[1] == 1
        rows: int | None = None
        if last_only:
            rows = 1
        elif len(logits_shape) == 3 and logits_shape[1] == _VERIFY_ROWS:
            # A manifest that does not say K leaves the rows unknown (bound per step).
            rows = manifest.verify_positions if manifest.verify_positions > 1 else None
        return cls(
            shared_buffer=shared_buffer,
            last_logits_only=last_only,
            logit_rows=rows,
            vocab_size=vocab if isinstance(vocab, int) else None,
            past_names=past,
            present_to_past=mapping,
            kv_heads=kv_heads,
            head_dim=head_dim,
            dtype=dtype,
            has_position_ids="position_ids" in inputs,
            output_names=outputs,
        )

    def empty_past(self) -> dict[str, np.ndarray]:
        """Past tensors of sequence length 0, for the prefill step."""
        shape = (1, self.kv_heads, 0, self.head_dim)
        return {name: np.zeros(shape, dtype=self.dtype) for name in self.past_names}


def uses_group_query_attention(model_path: Path, *, limit: int = 64 << 20) -> bool:
    """True if the graph uses GroupQueryAttention, whose KV cache can be a shared buffer.

    Op types are plain strings in the protobuf, so a byte search finds them without
    the ``onnx`` package (not part of the device install). Graphs with weights in
    external data are small; a graph larger than ``limit`` is not searched. A graph
    whose sliding-window layers keep window-sized caches (the builder's default
    ``windowed_kv_cache``) is refused: its cache protocol is not implemented here.
    """
    try:
        if model_path.stat().st_size > limit:
            return False
        graph = model_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {model_path}: {exc}") from exc
    if b"sliding_window_cache" in graph:
        raise ModelError(
            f"{model_path} keeps window-sized KV caches for its sliding-window layers; "
            "rebuild it with the onnxruntime-genai builder option windowed_kv_cache=false"
        )
    return b"GroupQueryAttention" in graph


def _static(shape: list[int | str | None], axis: int, fallback: int | None, what: str) -> int:
    value = shape[axis] if len(shape) == 4 else None
    if isinstance(value, int):
        return value
    if fallback is None:
        raise ModelError(f"model.onnx has a symbolic {what}; add {what} to manifest.json")
    return fallback
