"""Which non-numeric fields of a JSON object are wrong-typed readings, and which are text.

Device objects mix readings with descriptive fields (zigbee2mqtt ``action``, Tasmota
``Id``). A field is *wrong-typed* (dropped, and named in one ``wrong_type_fields``
dead letter per message) when

- its name is a known reading (the adapter's list, or a metric with a configured unit or
  range) and its value is text, null, a list or an object; or
- its value is a number written as a string (``"21.5"``, fullwidth ``"２１"``): devices
  send numbers as JSON numbers, so such a string is a producer bug, never a label.

Any other text, null or nested value is descriptive and skipped without a word.
"""

from __future__ import annotations

import re
from typing import Any

from edge_agent.ingest.limits import non_ascii_digits

# A decimal number as text, with any Unicode digits (re's \d is Unicode-aware on str).
_NUMERIC_TEXT = re.compile(r"\s*[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?\s*")


def field_problem(value: Any, known: bool) -> str | None:
    """Why ``value`` is a wrong type for its field, or None if it is simply not a reading."""
    if isinstance(value, str):
        if _NUMERIC_TEXT.fullmatch(value):
            if non_ascii_digits(value):
                return "a number in non-ASCII digits"
            return "a number written as a string"
        return "text, not a number" if known else None
    if known:
        return f"{_json_type(value)}, not a number"
    return None


def clip(name: str, limit: int = 40) -> str:
    """A field name short enough for a dead letter's detail."""
    return name if len(name) <= limit else name[:limit] + "…"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
