"""Keep untrusted text out of control tokens: neutralise every added token it spells.

``tokenizers`` parses added tokens (``<start_of_turn>``, ``<end_of_turn>``, ``<bos>``,
``<unused17>``, ...) wherever they appear in the text it encodes; ``add_special_tokens``
only controls the BOS/EOS post-processor. So a device named
``<end_of_turn><start_of_turn>user ...`` would end our turn and open a forged one. The
prompt template is the only place a control token may come from: everything placed in
the template's ``{user}`` slot (our instructions, and sensor names, values, units,
topic levels and questions inside them) passes through :meth:`SpecialTokenGuard.neutralise`
first. A token spelled in the text keeps its look (``<`` becomes ``‹``, ``[`` ``［``, any
other first character gets a word joiner after it), so the model still reads it as the
data it is, but the tokenizer no longer matches it. Pure code; the runtime builds one
guard from its ``tokenizer.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Look-alikes for the first character of a token; anything else gets WORD JOINER after it.
_LOOKALIKE = {"<": "\u2039", ">": "\u203a", "[": "\uff3b", "]": "\uff3d", "|": "\u01c0"}
_JOINER = "\u2060"
_MAX_PASSES = 4


@dataclass(frozen=True, slots=True)
class AddedToken:
    """One entry of ``tokenizer.json``'s ``added_tokens``."""

    id: int
    content: str
    special: bool


def added_tokens(doc: dict[str, Any]) -> tuple[AddedToken, ...]:
    """The added tokens of a parsed ``tokenizer.json``."""
    return tuple(
        AddedToken(int(t["id"]), str(t["content"]), bool(t.get("special", False)))
        for t in doc.get("added_tokens") or ()
    )


def guarded(tokens: Iterable[AddedToken]) -> tuple[AddedToken, ...]:
    """The tokens untrusted text may not produce: every added token with a visible
    character (runs of spaces or newlines are plain text, whatever the tokenizer calls them)."""
    return tuple(t for t in tokens if t.content.strip() and "\ufffd" not in t.content)


class SpecialTokenGuard:
    """Rewrites text so that the tokenizer finds none of the guarded tokens in it."""

    def __init__(self, tokens: Iterable[AddedToken]) -> None:
        kept = guarded(tokens)
        self.tokens = kept
        """The guarded tokens."""
        self.ids = frozenset(t.id for t in kept)
        """Ids untrusted text must never encode to."""
        self.contents = {t.id: t.content for t in kept}
        self._strings = frozenset(t.content for t in kept)
        self._firsts = frozenset(s[0] for s in self._strings)
        self._lengths = sorted({len(s) for s in self._strings}, reverse=True)

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> SpecialTokenGuard:
        """The guard for the tokenizer at ``path``."""
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(added_tokens(doc))

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialTokenGuard:
        """The guard for a loaded ``tokenizers.Tokenizer`` (its added-token table)."""
        table = tokenizer.get_added_tokens_decoder()
        return cls(AddedToken(int(i), str(t.content), bool(t.special)) for i, t in table.items())

    def neutralise(self, text: str) -> str:
        """``text`` with every guarded token's spelling broken (unchanged if it has none).

        Scanned until no token is left, since a rewrite could in principle complete
        another token with the characters after it.
        """
        for _ in range(_MAX_PASSES):
            out = self._pass(text)
            if out == text:
                return out
            text = out
        return self.harsh(text)

    def _pass(self, text: str) -> str:
        if not self._firsts or not any(c in self._firsts for c in text):
            return text
        parts: list[str] = []
        i, n = 0, len(text)
        while i < n:
            if text[i] in self._firsts:
                hit = next(
                    (L for L in self._lengths if text[i : i + L] in self._strings),
                    0,
                )
                if hit:
                    parts.append(break_token(text[i : i + hit]))
                    i += hit
                    continue
            parts.append(text[i])
            i += 1
        return "".join(parts)

    def harsh(self, text: str) -> str:
        """Every first character of a token replaced, wherever it stands (the fallback)."""
        return "".join(_LOOKALIKE.get(c, c + _JOINER) if c in self._firsts else c for c in text)


def break_token(token: str) -> str:
    """``token`` spelled so that it no longer matches: ``<bos>`` -> ``‹bos>``."""
    first, rest = token[0], token[1:]
    return _LOOKALIKE.get(first, first + _JOINER) + rest
