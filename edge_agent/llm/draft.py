"""Prompt-lookup drafting: guess the next tokens by finding the text's tail earlier on (pure).

Summaries and answers copy heavily from their prompt: names, units, numbers and whole
phrases of the readings and the few-shot examples. When the last n tokens (n from
``ngram_max`` down to ``ngram_min``) occurred before, in the prompt or in the text
generated so far, the tokens that followed them are a cheap guess of what comes next
(the most frequent follower, copied on from its latest occurrence). The runtime
scores the guess in one forward pass and keeps the prefix greedy decoding would have
produced anyway (``runtime.py``), so a bad guess costs only the extra positions of
that pass, never a different output.

A service narrates the same rooms again and again, in the same phrases ("was opened 2
times, last at", "above the 1,100 ppm limit"), and many of them are not in the next
prompt. :class:`DraftHistory` remembers what recent outputs said after each n-gram; when
it matches the tail longer than the prompt does, it drafts instead. It changes only how
many passes a text takes, never the text.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
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
    history_tokens: int = 2048
    """Tokens of recent outputs remembered to draft from (0 = the prompt only)."""
    pairs: bool = False
    """With drafting off: still decode in passes of two positions (the second unused), so
    greedy text is the same as with drafting on (see ``OnnxGenerator``); costs a row."""

    def __post_init__(self) -> None:
        if (
            self.max_tokens < 0
            or self.short_match_tokens < 0
            or self.history_tokens < 0
            or not 1 <= self.ngram_min <= self.ngram_max
        ):
            raise ValueError(
                f"draft settings: max_tokens {self.max_tokens}, short_match_tokens "
                f"{self.short_match_tokens} and history_tokens {self.history_tokens} "
                "must be >= 0 and "
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
        history: DraftHistory | None = None,
    ) -> None:
        self._sizes = tuple(range(ngram_max, ngram_min - 1, -1))
        self._short = short_match_tokens
        self._history = history
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
        followed by many things): it drafts ``short_match_tokens`` at most. When the
        history matches a longer tail than this text does, the history drafts.
        """
        if limit <= 0:
            return []
        seq = self._tokens
        n, followers = self._longest_match()
        history = self._history
        if history is not None and history.match(seq) > n:
            return history.propose(seq, limit)
        if followers is None:
            return []
        _, start = max(followers.values())
        if n == 1 and self._short:
            limit = min(limit, self._short)
        draft = seq[start : start + limit]
        # The latest match may sit right before the tail (a repeating phrase):
        # copy on through the draft itself, as LZ77 copies an overlapping run.
        while len(draft) < limit:
            draft.append(draft[len(draft) - (len(seq) - start)])
        return draft

    def _longest_match(self) -> tuple[int, dict[int, list[int]] | None]:
        """The longest indexed tail's length and its followers (0, None: no match)."""
        seq = self._tokens
        for n in self._sizes:
            if len(seq) < n:
                continue
            followers = self._next.get(tuple(seq[-n:]))
            if followers is not None:
                return n, followers
        return 0, None


class DraftHistory:
    """What recent outputs said next after each n-gram, forgetting the oldest first.

    Each output is recorded with the last ``context`` tokens of its prompt, so its
    first tokens are indexed after the prompt's tail (an answer's opening follows the
    prompt's closing words). Holds at most ``capacity`` tokens, about 1.6 KB each at
    worst (4 n-grams per token, all distinct); one inference worker uses it, so it
    takes no lock.
    """

    def __init__(self, capacity: int = 2048, *, ngram_max: int = 4, context: int = 8) -> None:
        self._capacity = capacity
        self._sizes = tuple(range(ngram_max, 0, -1))
        self._context = context
        self._held: deque[list[int]] = deque()
        self._size = 0
        self._serial = 0
        # n-gram -> {next token: [times seen, serial of its latest sighting]}
        self._next: dict[tuple[int, ...], dict[int, list[int]]] = {}

    def __len__(self) -> int:
        """Tokens held."""
        return self._size

    def record(self, prompt: list[int], output: list[int]) -> None:
        """Remember ``output`` (with its prompt's tail), then forget beyond the capacity."""
        if not output or self._capacity <= 0:
            return
        seq = (prompt[-self._context :] if self._context else []) + output
        self._serial += 1
        for key, token in self._followings(seq):
            seen = self._next.setdefault(key, {}).setdefault(token, [0, 0])
            seen[0] += 1
            seen[1] = self._serial
        self._held.append(seq)
        self._size += len(seq)
        while self._size > self._capacity:
            self._forget(self._held.popleft())

    def clear(self) -> None:
        """Forget everything (a warm-up's output is no guide to real requests)."""
        self._held.clear()
        self._next.clear()
        self._size = 0

    def match(self, tail: list[int]) -> int:
        """The length of the longest n-gram ending ``tail`` that an output continued."""
        for n in self._sizes:
            if len(tail) >= n and tuple(tail[-n:]) in self._next:
                return n
        return 0

    def propose(self, tail: list[int], limit: int) -> list[int]:
        """Up to ``limit`` tokens, each the most frequent follower of the longest match."""
        seq, draft = list(tail[-self._sizes[0] :]), list[int]()
        while len(draft) < limit:
            n = self.match(seq)
            if n == 0:
                break
            followers = self._next[tuple(seq[-n:])]
            token = max(followers, key=lambda t: followers[t])  # count, then recency
            draft.append(token)
            seq.append(token)
        return draft

    def _forget(self, seq: list[int]) -> None:
        self._size -= len(seq)
        for key, token in self._followings(seq):
            followers = self._next[key]
            seen = followers[token]
            seen[0] -= 1
            if seen[0] == 0:
                del followers[token]
                if not followers:
                    del self._next[key]

    def _followings(self, seq: list[int]) -> Iterator[tuple[tuple[int, ...], int]]:
        """Every (n-gram, the token after it) in ``seq``: what recording counts."""
        for end, token in enumerate(seq):
            for n in self._sizes:
                if end >= n:
                    yield tuple(seq[end - n : end]), token
