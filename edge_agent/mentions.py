"""Which of many known names a text mentions, at a cost set by the text, not the names.

Grounding refuses a text that names a device or area its findings do not. Searching
the text once per known name cost a regular expression per name (50 ms with a thousand
devices, on the event loop, for every answer). Here the names go into a set once, and
each text is read once: every stretch between two word boundaries, up to the longest
name, is looked up. A name matches where ``(?<!\\w)name(?!\\w)`` would, in lower case, and
an id's underscores also match spaces (``living_room`` in "the living room").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_WORD_CHAR = re.compile(r"\w")


class NameIndex:
    """A set of names, asked which of them a text mentions as whole words."""

    __slots__ = ("_forms", "_longest")

    def __init__(self, names: Iterable[str]) -> None:
        self._forms: dict[str, list[str]] = {}
        """Lower-case form (and its underscores-as-spaces form) -> the names as given."""
        for name in names:
            key = name.lower()
            if key:
                for form in {key, key.replace("_", " ")}:
                    self._forms.setdefault(form, []).append(name)
        self._longest = max(map(len, self._forms), default=0)

    def __len__(self) -> int:
        return len(self._forms)

    def mentioned(self, text: str) -> Iterator[str]:
        """The names ``text`` mentions, in the order they first appear (each once)."""
        lowered = text.lower()
        if not self._forms or not lowered:
            return
        word = [bool(_WORD_CHAR.match(c)) for c in lowered]
        n = len(lowered)
        # A match may start where the previous character is not a word character, and
        # end where the next one is not: the regex's (?<!\w) and (?!\w).
        ends = [j for j in range(1, n + 1) if j == n or not word[j]]
        seen: set[str] = set()
        first = 0
        for i in range(n):
            if i and word[i - 1]:
                continue
            while first < len(ends) and ends[first] <= i:
                first += 1
            for j in ends[first:]:
                if j - i > self._longest:
                    break
                for name in self._forms.get(lowered[i:j], ()):
                    if name not in seen:
                        seen.add(name)
                        yield name
