"""Prompt-lookup drafting: guess the next tokens by finding the text's tail earlier on (pure).

Summaries and answers copy heavily from their prompt: names, units, numbers and whole
phrases of the readings and the few-shot examples. When the last n tokens (n from
``ngram_max`` down to ``ngram_min``) occurred before, in the prompt or in the text
generated so far, the tokens that followed them are a cheap guess of what comes next
(the most frequent follower, copied on from its latest occurrence). The runtime
scores the guess in one forward pass and keeps the prefix greedy decoding would have
produced anyway (``runtime.py``), so a bad guess costs only the extra positions of
that pass, never a different output.
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
    short_match_tokens: int = 1
    """Most drafted tokens after a match of the tail's last token only (0 = as many as
    any match); a longer match drafts up to ``max_tokens``."""
    pairs: bool = False
    """With drafting off: still decode in passes of two positions (the second unused), so
    greedy text is the same as with drafting on (see ``OnnxGenerator``); costs a row."""

    def __post_init__(self) -> None:
        if (
            self.max_tokens < 0
            or self.short_match_tokens < 0
            or not 1 <= self.ngram_min <= self.ngram_max
        ):
            raise ValueError(
                f"draft settings: max_tokens {self.max_tokens} and short_match_tokens "
                f"{self.short_match_tokens} must be >= 0 and "
                f"1 <= ngram_min {self.ngram_min} <= ngram_max {self.ngram_max}"
            )


class PromptLookup:
    """An index of every n-gram of a growing token list, to what followed it.

    Each n-gram maps each token that followed it to how often it did and where it
    did last. A lookup of the list's own tail finds its earlier occurrences (the
    tail itself has no next token yet, so it is not indexed until that arrives).
    """

    def __init__(
        self,
        tokens: list[int],
        *,
        ngram_min: int = 1,
        ngram_max: int = 3,
        short_match_tokens: int = 1,
    ) -> None:
        self._sizes = tuple(range(ngram_max, ngram_min - 1, -1))
        self._short = short_match_tokens
        self._tokens: list[int] = []
        # n-gram -> {next token: [times seen, position of its latest occurrence]}
        self._next: dict[tuple[int, ...], dict[int, list[int]]] = {}
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
                    followers = index.setdefault(tuple(seq[end - n : end]), {})
                    seen = followers.get(token)
                    if seen is None:
                        followers[token] = [1, end]
                    else:
                        seen[0] += 1
                        seen[1] = end
            seq.append(token)

    def propose(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the longest earlier match of the tail.

        Among the match's occurrences, the token that followed it most often wins
        (ties: the latest), and the draft copies on from that token's latest
        occurrence. A one-token match is weak evidence (a common word or digit is
        followed by many things): it drafts ``short_match_tokens`` at most.
        """
        if limit <= 0:
            return []
        seq = self._tokens
        for n in self._sizes:
            if len(seq) < n:
                continue
            followers = self._next.get(tuple(seq[-n:]))
            if followers is None:
                continue
            _, start = max(followers.values())
            if n == 1 and self._short:
                limit = min(limit, self._short)
            draft = seq[start : start + limit]
            # The latest match may sit right before the tail (a repeating phrase):
            # copy on through the draft itself, as LZ77 copies an overlapping run.
            while len(draft) < limit:
                draft.append(draft[len(draft) - (len(seq) - start)])
            return draft
        return []
