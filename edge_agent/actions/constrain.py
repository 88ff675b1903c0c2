"""Constrained decoding: token masks from the proposal DFA and the model's vocabulary.

For a DFA state, every token is run through the transition table at once (numpy, one
column of bytes per step, only tokens still alive), so a mask costs one pass over the
vocabulary's bytes and is then cached per state for the life of the process. The free
text's length limit is kept outside the state: per allowed token we also keep how many
counted bytes it writes, so one cached mask serves every position in the text.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.actions.dfa import DEAD, Dfa
from edge_agent.actions.vocab import TokenArrays
from edge_agent.errors import GenerationError


@dataclass(frozen=True, slots=True)
class Mask:
    """The tokens allowed in one state, sorted by id, with where each leads."""

    ids: npt.NDArray[np.int32]
    next_state: npt.NDArray[np.int32]
    counts: npt.NDArray[np.int32]
    """Counted (free-text) bytes each token writes."""
    need: npt.NDArray[np.int32]
    """Fewest bytes still needed to finish after each token."""
    dense: npt.NDArray[np.bool_] | None
    """The same set as a vocabulary-sized boolean mask, kept for large sets (free text)."""

    @property
    def max_count(self) -> int:
        """Largest ``counts`` entry: below the budget left, no token needs checking."""
        return int(self.counts.max(initial=0))

    @property
    def max_need(self) -> int:
        """Largest ``need`` entry: below the tokens left, no token needs checking."""
        return int(self.need.max(initial=0))


class JsonConstraint:
    """A compiled grammar bound to one vocabulary; share it between requests."""

    def __init__(self, dfa: Dfa, tokens: TokenArrays) -> None:
        self.dfa = dfa
        self.tokens = tokens
        self._masks: dict[int, Mask] = {}
        self._lock = threading.Lock()

    def mask(self, state: int) -> Mask:
        """The allowed tokens of ``state`` (computed once, then cached)."""
        found = self._masks.get(state)
        if found is None:
            found = self._compute(state)
            with self._lock:
                self._masks[state] = found
        return found

    @property
    def cached_states(self) -> int:
        """States whose mask is computed, for benchmarks."""
        return len(self._masks)

    def processor(self, max_tokens: int) -> ConstrainedProcessor:
        """A fresh per-request logits processor (it holds the decoding state)."""
        return ConstrainedProcessor(self, max_tokens)

    def _compute(self, state: int) -> Mask:
        t, d = self.tokens, self.dfa
        row = d.trans[state]
        firsts = np.flatnonzero(row != DEAD)
        if len(firsts) == 0:
            empty = np.zeros(0, dtype=np.int32)
            return Mask(empty, empty, empty, empty, None)
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
        next_state = np.concatenate(nxt).astype(np.int32)[order]
        dense = None
        if len(all_ids) > t.size // 16:  # a scatter of this many ids costs more than a where
            dense = np.zeros(t.size, dtype=np.bool_)
            dense[all_ids] = True
        return Mask(
            all_ids[order],
            next_state,
            np.concatenate(counts).astype(np.int32)[order],
            d.to_accept[next_state],
            dense,
        )


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
        keep = mask.counts <= text_left
        room = keep & (mask.need <= left)
        if not room.any():  # budget too small to finish: take the shortest way out
            room = keep & (mask.need == mask.need[keep].min())
        return mask, mask.ids[room]

    def __call__(
        self, generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Set every disallowed token's logit to -inf."""
        mask, ids = self._next(generated)
        if ids is None and mask.dense is not None and len(mask.dense) == len(logits):
            return np.where(mask.dense, logits, np.float32(-np.inf))
        if ids is None:
            ids = mask.ids
        ids = ids[ids < len(logits)]
        out = np.full_like(logits, -np.inf)
        out[ids] = logits[ids]
        return out
