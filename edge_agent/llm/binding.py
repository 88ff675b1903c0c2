"""Decoder steps over onnxruntime: plain ``run``, IOBinding, and a fixed shared KV buffer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.errors import GenerationError
from edge_agent.llm.session import KvLayout

Past = dict[str, np.ndarray]
# Initial KV buffer length of the shared-buffer engine, before any request sizes it.
_FIRST_CAPACITY = 256
# Requests size the KV buffers in steps of this many positions.
_CAPACITY_STEP = 64


class DecoderEngine(Protocol):
    """Runs the decoder one step at a time and owns the KV cache between steps."""

    def reset(self) -> None:
        """Forget the cache: the next ``forward`` starts at position 0."""
        ...

    def reserve(self, positions: int, *, keep: int) -> None:
        """Size the cache for a request of ``positions`` in all; the first ``keep`` are valid."""
        ...

    def forward(self, ids: Sequence[int], past_len: int) -> npt.NDArray[np.float32]:
        """Feed ``ids`` after ``past_len`` cached positions; return the last logits row.

        The row is scratch: the caller may edit it in place, and the next call
        overwrites it (it may be a view into the engine's bound output).
        """
        ...

    def forward_rows(self, ids: Sequence[int], past_len: int) -> npt.NDArray[np.float32]:
        """Like ``forward``, but return the rows of the last ``min(len(ids), max_rows)``
        positions, shape ``[rows, vocab]`` (scratch, as ``forward``'s row)."""
        ...

    @property
    def max_rows(self) -> int | None:
        """Most rows ``forward_rows`` returns (the graph's verify positions); None: any."""
        ...

    def rewind(self, valid: int) -> None:
        """Keep only the first ``valid`` positions (drop rejected draft positions)."""
        ...

    def snapshot(self, n: int) -> Past:
        """A private copy of the cache's first ``n`` positions."""
        ...

    def restore(self, past: Past, positions: int | None = None) -> None:
        """Make a ``snapshot`` (or its first ``positions``) the cache again; the next
        forward continues after it."""
        ...


class _Steps:
    """What every engine shares: the fixed inputs and error translation."""

    def __init__(self, session: ort.InferenceSession, layout: KvLayout, context: int) -> None:
        self._session = session
        self._layout = layout
        # One row of ones, sliced per step, instead of a fresh mask every token.
        self._ones = np.ones((1, context + 1), dtype=np.int64)
        self._positions = np.arange(context + 1, dtype=np.int64)[None, :]

    def _small_inputs(self, ids: Sequence[int], past_len: int) -> dict[str, np.ndarray]:
        return {"input_ids": np.asarray([ids], dtype=np.int64), **self._span(past_len, len(ids))}

    def _span(self, past_len: int, count: int) -> dict[str, np.ndarray]:
        """The mask (and position ids) of ``count`` new positions after ``past_len``."""
        total = past_len + count
        feeds = {"attention_mask": self._ones[:, :total]}
        if self._layout.has_position_ids:
            feeds["position_ids"] = self._positions[:, past_len:total]
        return feeds

    def reserve(self, positions: int, *, keep: int) -> None:
        """Nothing to size: the cache grows with each step's outputs."""

    @property
    def max_rows(self) -> int | None:
        """The graph's scored positions per pass (None: every position)."""
        return self._layout.logit_rows

    def forward(self, ids: Sequence[int], past_len: int) -> npt.NDArray[np.float32]:
        """The last row of ``forward_rows``."""
        row: npt.NDArray[np.float32] = self.forward_rows(ids, past_len)[-1]
        return row

    def forward_rows(self, ids: Sequence[int], past_len: int) -> npt.NDArray[np.float32]:
        """Implemented by each engine."""
        raise NotImplementedError


def _failed(past_len: int, exc: Exception) -> GenerationError:
    return GenerationError(f"onnxruntime failed at position {past_len}: {exc}")


class PlainEngine(_Steps):
    """``session.run`` with numpy in and out: the reference path, no binding."""

    def __init__(self, session: ort.InferenceSession, layout: KvLayout, context: int) -> None:
        super().__init__(session, layout, context)
        self._past: Past = layout.empty_past()

    def reset(self) -> None:
        """Start from an empty cache."""
        self._past = self._layout.empty_past()

    def forward_rows(self, ids: Sequence[int], past_len: int) -> npt.NDArray[np.float32]:
        """One step with numpy feeds; the grown cache comes back as numpy."""
        feeds = {**self._small_inputs(ids, past_len), **self._past}
        try:
            outputs = self._session.run(None, feeds)
        # onnxruntime's pybind errors derive from Exception directly (see session.py).
        except Exception as exc:
            raise _failed(past_len, exc) from exc
        named = dict(zip(self._layout.output_names, outputs, strict=True))
        to_past = self._layout.present_to_past
        self._past = {to_past[k]: v for k, v in named.items() if k in to_past}
        rows: npt.NDArray[np.float32] = named["logits"][0, -len(ids) :]
        return rows

    def rewind(self, valid: int) -> None:
        """Views of the first ``valid`` positions (the graph only reads its past)."""
        self._past = {k: v[:, :, :valid] for k, v in self._past.items()}

    def snapshot(self, n: int) -> Past:
        """Copies of the first ``n`` positions."""
        return {k: np.ascontiguousarray(v[:, :, :n]) for k, v in self._past.items()}

    def restore(self, past: Past, positions: int | None = None) -> None:
        """Continue from ``past`` or its head (read-only use, so no copy)."""
        self._past = {k: v[:, :, :positions] for k, v in past.items()}


class BoundGrowingEngine(_Steps):
    """IOBinding for graphs that concatenate past and new keys inside (optimum exports).

    Each step's ``present`` OrtValues are bound as the next step's ``past`` as they
    are, so the cache never round-trips through numpy; only the logits are copied out.
    """

    def __init__(self, session: ort.InferenceSession, layout: KvLayout, context: int) -> None:
        super().__init__(session, layout, context)
        self._past: dict[str, ort.OrtValue] = {}
        self.reset()

    def reset(self) -> None:
        """Start from zero-length OrtValues."""
        self._past = {
            k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in self._layout.empty_past().items()
        }

    def forward_rows(self, ids: Sequence[int], past_len: int) -> npt.NDArray[np.float32]:
        """One step; outputs stay in onnxruntime-allocated OrtValues."""
        binding = self._session.io_binding()
        # Bound numpy inputs are borrowed, not copied: ``feeds`` keeps them alive.
        feeds = self._small_inputs(ids, past_len)
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name, ortvalue in self._past.items():
            binding.bind_ortvalue_input(name, ortvalue)
        for name in self._layout.output_names:
            binding.bind_output(name, "cpu")
        try:
            self._session.run_with_iobinding(binding)
        except Exception as exc:
            raise _failed(past_len, exc) from exc
        outputs = dict(zip(self._layout.output_names, binding.get_outputs(), strict=True))
        to_past = self._layout.present_to_past
        self._past = {to_past[k]: v for k, v in outputs.items() if k in to_past}
        logits: npt.NDArray[np.float32] = outputs["logits"].numpy()
        rows: npt.NDArray[np.float32] = logits[0, -len(ids) :]
        return rows

    def rewind(self, valid: int) -> None:
        """Rebind copies of the first ``valid`` positions (rare: a rejected draft)."""
        self.restore(self.snapshot(valid))

    def snapshot(self, n: int) -> Past:
        """Copies of the first ``n`` positions."""
        return {k: np.ascontiguousarray(v.numpy()[:, :, :n]) for k, v in self._past.items()}

    def restore(self, past: Past, positions: int | None = None) -> None:
        """Wrap the snapshot's arrays (no copy; the graph only reads past inputs)."""
        self._past = {
            k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v[:, :, :positions]))
            for k, v in past.items()
        }


class SharedBufferEngine(_Steps):
    """For GroupQueryAttention graphs: one KV buffer per layer, bound as past and present.

    ``past_key_values.*`` and ``present.*`` are bound to the same buffer, so
    GroupQueryAttention appends the new positions in place and nothing is copied or
    concatenated per token. Each request sizes the buffers to its prompt plus budget
    (``reserve``), because the op's cost tracks the buffer's length: one long request
    must not slow every later short one. The logits go to a preallocated array when
    the graph emits only the last position (the fused graph, or the builder's
    ``prune_lm_head``), and a decode step's token id is written into a bound array.
    """

    def __init__(self, session: ort.InferenceSession, layout: KvLayout, context: int) -> None:
        super().__init__(session, layout, context)
        self._context = context
        self._buffers: dict[str, np.ndarray] = {}
        self._binding = session.io_binding()
        # The snapshot whose positions sit untouched at the head of the buffers, if any:
        # restoring it again needs no copy (steps after it only write further on).
        self._resident: Past | None = None
        self._logits: npt.NDArray[np.float32] | None = None
        # With a known row count (last position only, or the last K), the logits go to
        # preallocated arrays, one per row count, bound when the count changes.
        self._rows_out: dict[int, npt.NDArray[np.float32]] = {}
        self._fixed_rows = layout.logit_rows is not None and bool(layout.vocab_size)
        # The caches are bound first: bound outputs come back in the order of their
        # first binding, and ``forward`` reads the unallocated logits as the last one.
        self._grow(min(context, _FIRST_CAPACITY), keep=0)
        if self._fixed_rows:
            self._bind_rows(1)
        else:
            self._binding.bind_output("logits", "cpu")
        # Decode steps write their one token here instead of binding a new array.
        self._token = np.zeros((1, 1), dtype=np.int64)
        self._token_bound = False

    def reserve(self, positions: int, *, keep: int) -> None:
        """Fit the buffers to a request: grow to it, or shrink if they are over twice it."""
        step = _CAPACITY_STEP
        target = min(self._context, -(-positions // step) * step)
        if target > self._capacity or self._capacity > 2 * target:
            self._grow(max(target, keep), keep=keep)

    def _make_room(self, positions: int, *, keep: int) -> None:
        """Make room for ``positions`` mid-request: at least double, at most the context."""
        if positions > self._capacity:
            self._grow(min(self._context, max(positions, 2 * self._capacity)), keep=keep)

    def _grow(self, capacity: int, *, keep: int) -> None:
        """(Re)allocate the buffers at ``capacity`` positions, keeping the first ``keep``.

        GroupQueryAttention's work per step grows with the bound buffer's length, not
        the valid one, so the buffers start small and double as a generation needs.
        """
        layout = self._layout
        resident = self._resident
        if resident is not None and keep < next(iter(resident.values())).shape[2]:
            self._resident = None  # its positions are not carried over
        shape = (1, layout.kv_heads, capacity, layout.head_dim)
        past_to_present = {v: k for k, v in layout.present_to_past.items()}
        for name in layout.past_names:
            # np.zeros is calloc: pages are only committed as positions are written.
            buffer = np.zeros(shape, dtype=layout.dtype)
            old = self._buffers.get(name)
            if old is not None and keep:
                buffer[:, :, :keep] = old[:, :, :keep]
            self._buffers[name] = buffer
            value = ort.OrtValue.ortvalue_from_numpy(buffer)
            self._binding.bind_ortvalue_input(name, value)
            self._binding.bind_ortvalue_output(past_to_present[name], value)
        self._capacity = capacity

    def reset(self) -> None:
        """Nothing to clear: the mask length tells the graph how much of the buffer is valid."""
        self._resident = None

    def _bind_rows(self, rows: int) -> None:
        """Bind the preallocated ``[1, rows, vocab]`` logits array (made on first use)."""
        out = self._rows_out.get(rows)
        if out is None:
            assert self._layout.vocab_size is not None
            out = np.zeros((1, rows, self._layout.vocab_size), dtype=np.float32)
            self._rows_out[rows] = out
        self._binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(out))
        self._logits = out

    def forward_rows(self, ids: Sequence[int], past_len: int) -> npt.NDArray[np.float32]:
        """One step; KV appended in place, logits written to the bound array.

        Positions past ``past_len`` from an earlier step (rejected drafts) are simply
        overwritten: the mask's length is what GroupQueryAttention takes as valid.
        """
        self._make_room(past_len + len(ids), keep=past_len)
        # Bound numpy inputs are borrowed, not copied: ``feeds`` keeps them alive.
        feeds = self._span(past_len, len(ids))
        if len(ids) == 1:
            # The bound [1, 1] array is read at run time: writing it is the new input.
            self._token[0, 0] = ids[0]
            if not self._token_bound:
                self._binding.bind_cpu_input("input_ids", self._token)
                self._token_bound = True
        else:
            feeds["input_ids"] = np.asarray([ids], dtype=np.int64)
            self._token_bound = False
        for name, value in feeds.items():
            self._binding.bind_cpu_input(name, value)
        if self._fixed_rows:
            assert self._layout.logit_rows is not None
            rows = min(len(ids), self._layout.logit_rows)
            if self._logits is None or self._logits.shape[1] != rows:
                self._bind_rows(rows)
        else:
            # Re-bind each step: a kept output from the last run would be treated as
            # preallocated, and the prefill's [1, n, vocab] cannot take a decode step's.
            self._binding.bind_output("logits", "cpu")
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:
            raise _failed(past_len, exc) from exc
        logits: npt.NDArray[np.float32]
        if self._fixed_rows:
            assert self._logits is not None
            logits = self._logits
        else:
            # Re-binding a name keeps its place: the caches first, logits last.
            logits = self._binding.get_outputs()[-1].numpy()
        rows_out: npt.NDArray[np.float32] = logits[0]
        return rows_out

    def rewind(self, valid: int) -> None:
        """Nothing to copy: the next step's mask makes positions from ``valid`` on invalid."""
        resident = self._resident
        if resident is not None and valid < next(iter(resident.values())).shape[2]:
            self._resident = None

    def snapshot(self, n: int) -> Past:
        """Copies of the first ``n`` positions of every buffer."""
        kept = {k: np.ascontiguousarray(v[:, :, :n]) for k, v in self._buffers.items()}
        self._resident = kept
        return kept

    def restore(self, past: Past, positions: int | None = None) -> None:
        """Copy the snapshot (or its first ``positions``) back into the head of the
        buffers, unless it is still there."""
        length = max(kept.shape[2] for kept in past.values())
        count = length if positions is None else min(positions, length)
        if past is not self._resident:
            self._make_room(count, keep=0)
            for name, kept in past.items():
                self._buffers[name][:, :, :count] = kept[:, :, :count]
        # Only a whole snapshot stays resident: the next steps write from ``count`` on.
        self._resident = past if count == length else None


def make_engine(
    session: ort.InferenceSession, layout: KvLayout, context: int, *, io_binding: bool = True
) -> DecoderEngine:
    """The fastest engine the graph allows, or the plain one when ``io_binding`` is off."""
    if not io_binding:
        return PlainEngine(session, layout, context)
    if layout.shared_buffer:
        return SharedBufferEngine(session, layout, context)
    return BoundGrowingEngine(session, layout, context)
