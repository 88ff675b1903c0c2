"""Constrained decoding: token masks from the proposal DFA and the model's vocabulary.

For a DFA state, every token is run through the transition table at once (numpy, one
column of bytes per step, only tokens still alive), so a mask costs one pass over the
vocabulary's bytes and is then cached per state for the life of the process. The free
text's length limit is kept outside the state: per allowed token we also keep how many
counted bytes it writes, so one cached mask serves every position in the text.

Masks are per DFA state, and equivalent states are merged when the DFA is compiled, so
the free-text ``reason`` every action ends with has one mask (4 MB on a 262k vocabulary
before the narrowing below, once per action before the merge). ``warm`` computes them
all at start-up so the first proposal is not slower than the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.actions.dfa import DEAD, Dfa
from edge_agent.actions.vocab import TokenArrays
from edge_agent.errors import GenerationError

Ints = npt.NDArray[np.signedinteger[Any]]
_REASON_KEY = b'"reason"'
_FORCED_SCAN_BYTES = 4096  # a proposal's head is far shorter; the reason is not checked


@dataclass(frozen=True, slots=True)
class Mask:
    """The tokens allowed in one state, sorted by id, with where each leads."""

    ids: npt.NDArray[np.int32]
    next_state: Ints
    counts: Ints
    """Counted (free-text) bytes each token writes."""
    max_count: int
    """Largest ``counts`` entry: below the budget left, no token needs checking."""
    max_need: int
    """Most bytes still needed to finish after any token: below the tokens left, no
    token needs checking. (Per token it is ``dfa.to_accept[next_state]``, looked up
    only when the budget is tight rather than kept for every allowed token.)"""
    refused: npt.NDArray[np.int32] | None
    """For large sets (free text), the vocabulary's other ids: masking those few in
    place is far cheaper than copying the allowed ones."""

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        arrays = (self.ids, self.next_state, self.counts, self.refused)
        return sum(a.nbytes for a in arrays if a is not None)


@dataclass(frozen=True, slots=True)
class WarmStats:
    """What :meth:`JsonConstraint.warm` did."""

    states: int
    """Masks computed or found (every state reachable between two tokens)."""
    seconds: float
    mask_bytes: int


class JsonConstraint:
    """A compiled grammar bound to one vocabulary; share it between requests."""

    def __init__(self, dfa: Dfa, tokens: TokenArrays) -> None:
        self.dfa = dfa
        self.tokens = tokens
        self._masks: dict[int, Mask] = {}
        # Held while computing, so a generation and the start-up warm-up never
        # compute the same mask twice; a cached mask is read without it.
        self._lock = threading.Lock()

    def mask(self, state: int) -> Mask:
        """The allowed tokens of ``state`` (computed once, then cached)."""
        found = self._masks.get(state)
        if found is None:
            with self._lock:
                found = self._masks.get(state)
                if found is None:
                    found = self._compute(state)
                    self._masks[state] = found
        return found

    def warm(self) -> WarmStats:
        """Compute the mask of every state a generation can be in between two tokens.

        Those are the start, the dead state (a complete document) and every state a
        computed mask leads to: the first proposal then finds them all cached. About
        0.3 s for a two-action allowlist on Gemma 3's 262k vocabulary (2 x86 cores), so
        the service runs it off the event loop.
        """
        started = time.perf_counter()
        seen = {self.dfa.start, DEAD}
        todo = list(seen)
        while todo:
            for state in np.unique(self.mask(todo.pop()).next_state).tolist():
                if state not in seen:
                    seen.add(state)
                    todo.append(state)
        return WarmStats(len(seen), time.perf_counter() - started, self.mask_bytes)

    @property
    def cached_states(self) -> int:
        """States whose mask is computed, for benchmarks."""
        return len(self._masks)

    @property
    def mask_bytes(self) -> int:
        """Memory held by the cached masks."""
        # A copy of the values: the warm-up thread may be adding masks meanwhile.
        return sum(m.nbytes for m in list(self._masks.values()))

    def processor(self, max_tokens: int) -> ConstrainedProcessor:
        """A fresh per-request logits processor (it holds the decoding state)."""
        return ConstrainedProcessor(self, max_tokens)

    def _compute(self, state: int) -> Mask:
        t, d = self.tokens, self.dfa
        row = d.trans[state]
        firsts = np.flatnonzero(row != DEAD)
        if len(firsts) == 0:
            empty = np.zeros(0, dtype=np.int32)
            return Mask(empty, empty, empty, 0, 0, None)
        cand = np.concatenate([t.by_first[t.starts[b] : t.starts[b + 1]] for b in firsts])
        byte = t.flat[t.offsets[cand]]
        st = row[byte]
        cnt = d.counted[state, byte]
        ids, nxt, counts = [], [], []
        pos = 1
        while len(cand):
            finished = t.lengths[cand] == pos
            ids.append(cand[finished])
            nxt.append(st[finished])
            counts.append(cnt[finished])
            go = ~finished
            cand, st, cnt = cand[go], st[go], cnt[go]
            if not len(cand):
                break
            byte = t.flat[t.offsets[cand] + pos]
            cnt = cnt + d.counted[st, byte]
            st = d.trans[st, byte]
            alive = st != DEAD
            cand, st, cnt = cand[alive], st[alive], cnt[alive]
            pos += 1
        all_ids = np.concatenate(ids).astype(np.int32)
        order = np.argsort(all_ids)
        all_ids = all_ids[order]
        next_state = np.concatenate(nxt)[order]
        counted = np.concatenate(counts)[order]
        refused = None
        if len(all_ids) > t.size // 2:
            refused = np.setdiff1d(np.arange(t.size, dtype=np.int32), all_ids, assume_unique=True)
        return Mask(
            all_ids,
            _narrow(next_state),
            _narrow(counted),
            int(counted.max(initial=0)),
            int(d.to_accept[next_state].max(initial=0)),
            refused,
        )


def _in_value(text: bytes | bytearray) -> bool:
    """Whether the next token continues (or starts) a value before the reason.

    Our values are quote-delimited strings without escapes, and numbers: after the last
    ``":`` a value is in progress until a comma, a brace or its closing quote.
    """
    if _REASON_KEY in text:
        return False
    colon = text.rfind(b'":')
    if colon < 0:
        return False
    tail = text[colon + 2 :]
    return not any(c in tail for c in b",{}") and tail.count(b'"') < 2


def _narrow(values: Ints) -> Ints:
    """``int16`` when the (non-negative) values fit: halves the 262k free-text arrays."""
    if values.max(initial=0) <= np.iinfo(np.int16).max:
        return values.astype(np.int16)
    return values.astype(np.int32)


class ConstrainedProcessor:
    """The per-request :class:`~edge_agent.llm.base.LogitsProcessor`.

    It follows the tokens the runtime reports as generated, and masks every token that
    would leave the grammar, overrun the free text's length, or leave too few tokens of
    ``max_tokens`` to close the document. Once the document is complete only the
    end-of-sequence tokens remain.
    """

    def __init__(self, constraint: JsonConstraint, max_tokens: int) -> None:
        self._c = constraint
        self._max_tokens = max_tokens
        self.state = constraint.dfa.start
        self.used = 0
        """Counted free-text bytes written so far."""
        self._seen = 0
        self._text = bytearray()
        self.forced = False
        """The grammar overrode the model's own first choice inside a value before
        ``"reason"``: an action, device or parameter the model did not pick (a 35 °C
        request written as 24.0, say). Such a proposal never runs without approval.
        Overrides of the document's punctuation and keys do not count."""

    @property
    def complete(self) -> bool:
        """The generated text is a whole document."""
        return bool(self._c.dfa.accepting[self.state])

    def advance(self, token: int) -> None:
        """Follow one generated token; raise GenerationError if it was not allowed."""
        if token in self._c.tokens.eos and self.complete:
            return
        mask = self._c.mask(self.state)
        i = int(np.searchsorted(mask.ids, token))
        if i >= len(mask.ids) or mask.ids[i] != token:
            raise GenerationError(f"token {token} breaks the constrained grammar")
        self.used += int(mask.counts[i])
        self.state = int(mask.next_state[i])
        if len(self._text) < _FORCED_SCAN_BYTES:
            t = self._c.tokens
            start = int(t.offsets[token])
            self._text += t.flat[start : start + int(t.lengths[token])].tobytes()

    def allowed(self, generated: Sequence[int]) -> npt.NDArray[np.int32]:
        """Ids allowed next, after following ``generated``."""
        mask, filtered = self._next(generated)
        return mask.ids if filtered is None else filtered

    def _next(self, generated: Sequence[int]) -> tuple[Mask, npt.NDArray[np.int32] | None]:
        """The state's mask, and the filtered ids when budgets rule some tokens out."""
        for token in generated[self._seen :]:
            self.advance(int(token))
        self._seen = len(generated)
        if self.complete:
            return self._c.mask(DEAD), self._c.tokens.eos
        mask = self._c.mask(self.state)
        text_left = self._c.dfa.count_limit - self.used
        # Leave room to finish: from the next state, at worst one byte per token.
        left = self._max_tokens - len(generated) - 1
        if mask.max_count <= text_left and mask.max_need <= left:
            return mask, None  # the common case: no per-token check needed
        need = self._c.dfa.to_accept[mask.next_state]
        keep = mask.counts <= text_left
        room = keep & (need <= left)
        if not room.any():  # budget too small to finish: take the shortest way out
            room = keep & (need == need[keep].min())
        return mask, mask.ids[room]

    def __call__(
        self, generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Set every disallowed token's logit to -inf.

        Large sets are masked in place, as the hook allows (the runtime hands over its
        own copy); small ones are copied into a fresh array of -inf.
        """
        mask, ids = self._next(generated)
        if not self.forced and len(logits) and _in_value(self._text):
            top = int(np.argmax(logits))
            allowed = mask.ids if ids is None else ids
            i = int(np.searchsorted(allowed, top))
            self.forced = i >= len(allowed) or int(allowed[i]) != top
        if ids is None and mask.refused is not None and len(logits) == self._c.tokens.size:
            logits[mask.refused] = -np.inf
            return logits
        if ids is None:
            ids = mask.ids
        ids = ids[ids < len(logits)]
        out = np.full_like(logits, -np.inf)
        out[ids] = logits[ids]
        return out
