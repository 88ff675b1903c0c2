"""Prompt-lookup drafting: guess the next tokens by finding the text's tail earlier on (pure).

Summaries and answers copy heavily from their prompt: names, units, numbers and whole
phrases of the readings and the few-shot examples. When the last n tokens (n from
``ngram_max`` down to ``ngram_min``) occurred before, in the prompt or in the text
generated so far, the tokens that followed their latest occurrence are a cheap guess
of what comes next. The runtime scores the guess in one forward pass and keeps the
prefix greedy decoding would have produced anyway (``runtime.py``), so a bad guess
costs only the extra positions of that pass, never a different output.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DraftConfig:
    """How the runtime drafts; ``max_tokens`` 0 means as many as the graph verifies."""

    enabled: bool = True
    max_tokens: int = 0
    """Most drafted tokens per forward pass; capped by the folder's verify positions - 1."""
    ngram_min: int = 1
    ngram_max: int = 3
    pairs: bool = False
    """With drafting off: still decode in passes of two positions (the second unused), so
    greedy text is the same as with drafting on (see ``OnnxGenerator``); costs a row."""

    def __post_init__(self) -> None:
        if self.max_tokens < 0 or not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(
                f"draft settings: max_tokens {self.max_tokens} must be >= 0 and "
                f"1 <= ngram_min {self.ngram_min} <= ngram_max {self.ngram_max}"
            )


class PromptLookup:
    """An index of every n-gram of a growing token list, to the position after it.

    Each n-gram maps to where the token after its latest occurrence sits, so a lookup
    of the list's own tail finds an earlier occurrence (the tail itself has no next
    token yet, so it is not indexed until the next token arrives).
    """

    def __init__(self, tokens: list[int], *, ngram_min: int = 1, ngram_max: int = 3) -> None:
        self._sizes = tuple(range(ngram_max, ngram_min - 1, -1))
        self._tokens: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    @property
    def tokens(self) -> list[int]:
        """The indexed list (read-only use)."""
        return self._tokens

    def extend(self, tokens: list[int]) -> None:
        """Append ``tokens``, indexing the n-grams that now have a following token."""
        seq, index, sizes = self._tokens, self._next, self._sizes
        for token in tokens:
            end = len(seq)  # position of ``token``: the n-grams ending before it gain it
            for n in sizes:
                if end >= n:
                    index[tuple(seq[end - n : end])] = end
            seq.append(token)

    def propose(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the longest earlier match of the tail."""
        if limit <= 0:
            return []
        seq = self._tokens
        for n in self._sizes:
            if len(seq) < n:
                continue
            start = self._next.get(tuple(seq[-n:]))
            if start is not None:
                draft = seq[start : start + limit]
                # The latest match may sit right before the tail (a repeating phrase):
                # copy on through the draft itself, as LZ77 copies an overlapping run.
                while len(draft) < limit:
                    draft.append(draft[len(draft) - (len(seq) - start)])
                return draft
        return []
