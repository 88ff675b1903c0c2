"""A tiny, safe path language into decoded JSON: ``sensors[0].temp``, ``$.a.b``, ``a["x.y"]``."""

from __future__ import annotations

from typing import Any

from edge_agent.errors import ConfigError

Step = str | int
"""A key of an object (str) or an index into an array (int, negative counts from the end)."""

MISSING: Any = object()
"""What :func:`resolve` returns when the path does not exist in the document."""


def compile_path(text: str) -> tuple[Step, ...]:
    """Parse a path once, at start-up; raises :class:`ConfigError` on a syntax error.

    Grammar: an optional ``$``, then ``name`` or ``.name`` (any characters but ``.[]``),
    ``[<integer>]``, or ``["key"]`` / ``['key']`` for keys with dots or brackets.
    """
    if not text.strip():
        raise ConfigError("path is empty; use '$' for the whole document")
    steps: list[Step] = []
    i, n = 0, len(text)
    if text.startswith("$"):
        i = 1
    while i < n:
        ch = text[i]
        # Only the very first name of a path without "$" may omit its dot.
        if ch == "." or (i == 0 and ch != "["):
            start = i + 1 if ch == "." else i
            end = start
            while end < n and text[end] not in ".[]":
                end += 1
            if end == start:
                raise ConfigError(f"path {text!r}: empty name at char {start}")
            steps.append(text[start:end])
            i = end
        elif ch == "[":
            quote = text[i + 1 : i + 2]
            if quote in ("'", '"'):
                # A quoted key may hold any character but its own quote, even ']' or '.'.
                end_quote = text.find(quote, i + 2)
                if end_quote < 0 or text[end_quote + 1 : end_quote + 2] != "]":
                    raise ConfigError(f"path {text!r}: unterminated quoted key at char {i}")
                steps.append(text[i + 2 : end_quote])
                i = end_quote + 2
                continue
            close = text.find("]", i)
            if close < 0:
                raise ConfigError(f"path {text!r}: '[' at char {i} is never closed")
            inner = text[i + 1 : close].strip()
            try:
                steps.append(int(inner))
            except ValueError:
                raise ConfigError(
                    f"path {text!r}: [{inner}] is neither an index nor a quoted key"
                ) from None
            i = close + 1
        else:
            raise ConfigError(f"path {text!r}: unexpected {ch!r} at char {i}")
    return tuple(steps)


def resolve(doc: Any, steps: tuple[Step, ...]) -> Any:
    """The value at ``steps`` in ``doc``, or :data:`MISSING`; never raises."""
    node = doc
    for step in steps:
        if isinstance(step, str):
            if not isinstance(node, dict):
                return MISSING
            node = node.get(step, MISSING)
            if node is MISSING:
                return MISSING
        else:
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                return MISSING
            node = node[step]
    return node
