"""Grounded by construction: while the model writes a number, only a shown one can come out.

A logits processor for narration. Outside a number, a token with a digit is allowed
only if it starts one of the shown numbers ("1,250", "21.4", "08:12"); inside one,
only tokens that keep it a prefix of a shown number, and the number may end only once
it is complete. Digits right after a letter ("CO2", "PM2.5") are words, not numbers,
and are left alone. Units, roles and state words are still the grounding check's
job; this only removes the most common failure of a small model, a number it made up
or copied from an example. The vocabulary scan is done once per model (502 of Gemma
3's 262,144 tokens hold a digit); a step then costs a few array writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_agent.actions.vocab import TokenTable

_NUMERIC = re.compile(r"^([^\w]*?)([0-9][0-9.,:]*)$")
_RUN = re.compile(r"[0-9][0-9.,:]*$")
_SEPARATORS = frozenset(".,:")


class NumberGuard:
    """The digit-bearing tokens of one vocabulary; share it between requests."""

    def __init__(self, tokens: Sequence[bytes | None]) -> None:
        self.size = len(tokens)
        self.text: list[str] = []
        digits: list[int] = []
        self.numeric: list[tuple[int, str, str]] = []
        """(id, leading spaces or punctuation, the number part) of pure number tokens."""
        self.separators: list[tuple[int, str]] = []
        for i, raw in enumerate(tokens):
            s = raw.decode("utf-8", errors="replace") if raw is not None else ""
            self.text.append(s)
            if s and s in _SEPARATORS:
                self.separators.append((i, s))
            if any(c.isdigit() for c in s):
                digits.append(i)
                m = _NUMERIC.match(s)
                if m:
                    self.numeric.append((i, m.group(1), m.group(2)))
        self.digit_ids = np.array(digits, dtype=np.int64)

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> NumberGuard:
        """The guard for the vocabulary in ``model_dir/tokenizer.json``."""
        return cls(TokenTable.from_tokenizer_json(model_dir / "tokenizer.json", ()).tokens)

    def processor(self, numbers: Iterable[str]) -> GuardedNumbers:
        """A fresh per-request logits processor allowing only ``numbers`` (as written)."""
        return GuardedNumbers(self, tuple(dict.fromkeys(numbers)))


class GuardedNumbers:
    """The per-request :class:`~edge_agent.llm.base.LogitsProcessor`."""

    def __init__(self, guard: NumberGuard, allowed: tuple[str, ...]) -> None:
        self._g = guard
        self._allowed = allowed
        self._text = ""
        self._seen = 0

    def _starts(self, prefix: str) -> bool:
        return any(s.startswith(prefix) for s in self._allowed)

    def __call__(
        self, generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Mask the digit tokens that would write a number not shown."""
        g = self._g
        for token in generated[self._seen :]:
            self._text += g.text[token] if 0 <= token < g.size else ""
        self._seen = len(generated)
        text = self._text
        m = _RUN.search(text)
        if (m and m.start() > 0 and text[m.start() - 1].isalpha()) or (
            not m and text[-1:].isalpha()
        ):
            return logits  # digits inside a word: CO2, PM2.5
        run = m.group(0) if m else ""
        if run:
            ok = [i for i, lead, num in g.numeric if not lead and self._starts(run + num)]
            ok += [i for i, sep in g.separators if self._starts(run + sep)]
            complete = run in self._allowed or (
                run[-1] in _SEPARATORS and run[:-1] in self._allowed
            )
            if not complete and ok:
                out = np.full_like(logits, -np.inf)
                keep = np.array(ok, dtype=np.int64)
                keep = keep[keep < len(logits)]
                out[keep] = logits[keep]
                return out
        else:
            ok = [i for i, _, num in g.numeric if self._starts(num)]
        banned = np.setdiff1d(g.digit_ids, np.array(ok, dtype=np.int64), assume_unique=True)
        banned = banned[banned < len(logits)]
        logits[banned] = -np.inf
        return logits
