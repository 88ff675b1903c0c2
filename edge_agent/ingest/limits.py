"""Explicit limits on what a payload from the network may hold, each with its own reason.

Python's own limits are not a policy: ``json`` recurses once per nesting level (a
``[[[…`` of 100,000 levels raises ``RecursionError``), ``int()`` refuses more than 4,300
digits with ``ValueError``, ``float()`` of a 310-digit integer raises ``OverflowError``,
``float("２１")`` is 21.0, and a ``"\\ud800"`` escape decodes to a lone surrogate that
later breaks the tokenizer, ``json.dumps(...).encode()``, SQLite and the log. Each of
these is checked here first and ends in a :class:`PayloadError` with a stable reason:

- ``too_deep``: more than :data:`MAX_DEPTH` nested arrays/objects, found by a bracket
  scan *before* decoding;
- ``number_too_long``: an integer literal of more than :data:`MAX_INT_DIGITS` digits, or
  any number literal longer than :data:`MAX_NUMBER_CHARS` characters;
- ``out_of_range``: a reading whose magnitude exceeds :data:`MAX_MAGNITUDE`;
- ``non_ascii_digits``: a text reading written with digits other than ASCII 0-9;
- ``invalid_unicode``: a lone surrogate anywhere in a decoded document (key or value);
- ``bad_name``: a device or metric name that is empty, longer than
  :data:`MAX_NAME_CHARS` or holds a control character.
"""

from __future__ import annotations

import re
from typing import Any

from edge_agent.errors import PayloadError

MAX_DEPTH = 32
"""Nesting levels a JSON document may have; device payloads use 1-4."""
MAX_INT_DIGITS = 20
"""Digits of an integer literal: a uint64 (epoch ms has 13)."""
MAX_NUMBER_CHARS = 64
"""Characters of any number literal (``%.20f`` of a reading has about 25)."""
MAX_MAGNITUDE = 1e15
"""Largest absolute reading; beyond it a float no longer counts whole units exactly."""
MAX_NAME_CHARS = 128
"""Longest device or metric name."""

# The characters that change nesting depth or string state; everything else is skipped
# by the regex engine in C, so the scan costs little even at 64 KiB.
_STRUCTURE = re.compile(r'[\[\]{}"\\]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Raise ``too_deep`` if ``text`` nests arrays/objects deeper than ``limit``.

    Brackets inside strings do not count. Runs before ``json`` decodes, so no depth
    reaches the recursive decoder. Linear in the text; free when it has few brackets.
    """
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    in_string = False
    skip = -1  # index of a character escaped by a backslash inside a string
    for match in _STRUCTURE.finditer(text):
        pos = match.start()
        if pos == skip:
            continue
        ch = match.group()
        if in_string:
            if ch == "\\":
                skip = pos + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise PayloadError("too_deep", f"nesting deeper than {limit} levels")
        elif ch in "]}":
            depth -= 1


def parse_int(literal: str) -> int:
    """``json`` hook for integer literals: at most :data:`MAX_INT_DIGITS` digits."""
    digits = len(literal) - (literal[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise PayloadError(
            "number_too_long", f"an integer of {digits} digits (at most {MAX_INT_DIGITS})"
        )
    return int(literal)


def parse_float(literal: str) -> float:
    """``json`` hook for number literals with a fraction or exponent."""
    if len(literal) > MAX_NUMBER_CHARS:
        raise PayloadError(
            "number_too_long",
            f"a number of {len(literal)} characters (at most {MAX_NUMBER_CHARS})",
        )
    return float(literal)


def check_magnitude(value: float, what: str) -> float:
    """``value`` if ``|value| <= MAX_MAGNITUDE``, else ``out_of_range``."""
    if abs(value) > MAX_MAGNITUDE:
        raise PayloadError("out_of_range", f"{clean(what)}={value:g} exceeds ±{MAX_MAGNITUDE:g}")
    return value


def check_unicode(doc: Any, text: str) -> None:
    """Raise ``invalid_unicode`` if a key or string of ``doc`` holds a lone surrogate.

    Raw UTF-8 cannot carry a surrogate (the decoder refuses it), only a ``\\u`` escape
    can, so a document whose text has no ``\\u`` is not walked at all.
    """
    if "\\u" not in text:
        return
    bad = _find_surrogate(doc)
    if bad is not None:
        raise PayloadError("invalid_unicode", f"lone surrogate in {clean(bad)!r}")


def check_clean(*texts: str) -> None:
    """Raise ``invalid_unicode`` if one of ``texts`` holds a lone surrogate."""
    for text in texts:
        if not _is_clean(text):
            raise PayloadError("invalid_unicode", f"lone surrogate in {clean(text)[:40]!r}")


def _find_surrogate(node: Any) -> str | None:
    # Recursion is bounded: check_depth ran before the document was decoded.
    if isinstance(node, str):
        return node if not _is_clean(node) else None
    if isinstance(node, dict):
        for key, value in node.items():
            if not _is_clean(key):
                return str(key)
            found = _find_surrogate(value)
            if found is not None:
                return found
    elif isinstance(node, list):
        for item in node:
            found = _find_surrogate(item)
            if found is not None:
                return found
    return None


def _is_clean(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_name(name: str, what: str) -> str:
    """``name`` if usable as a device or metric name, else ``bad_name``."""
    if not name or len(name) > MAX_NAME_CHARS or _CONTROL.search(name) or not _is_clean(name):
        raise PayloadError(
            "bad_name",
            f"{what} {clean(name[:40])!r} is empty, longer than {MAX_NAME_CHARS} characters "
            "or holds a control character",
        )
    return name


def non_ascii_digits(word: str) -> bool:
    """True if ``word`` holds a digit outside ASCII 0-9 (fullwidth, Arabic-Indic...)."""
    return not word.isascii() and any(ch.isdigit() or ch.isnumeric() for ch in word)


def clean(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD: safe to log, encode and store."""
    if _is_clean(text):
        return text
    return _SURROGATE.sub("\ufffd", text)
