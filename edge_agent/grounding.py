"""The grounding check: a generated text may only use numbers and names found in its facts.

A 2B model invents numbers. Code checks every number in the text against the numbers
the model was shown (within the rounding the text uses), and every known device or area
name against the facts behind the summary. A failed check means the caller publishes a
deterministic fallback instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from edge_agent.domain import MetricFacts

# Numbers as people write them: -3, 21.5, 21,5 (fr/de decimal comma), 1,400 (thousands).
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*")


@dataclass(frozen=True, slots=True)
class GroundingResult:
    """Outcome of the check; ``reason`` says what was not found."""

    ok: bool
    reason: str = ""


def numbers_in(text: str) -> list[tuple[float, int]]:
    """Every number in ``text`` as (value, decimals written), tolerant of 1,400 and 21,5."""
    found = []
    for token in _NUMBER.findall(text):
        for value, decimals in _readings(token):
            found.append((value, decimals))
            break
    return found


def _readings(token: str) -> list[tuple[float, int]]:
    """Possible readings of a token, most likely first."""
    if "," in token and "." not in token:
        head, _, tail = token.rpartition(",")
        if len(tail) == 3 and head.lstrip("-").isdigit():  # 1,400 → thousands
            return [(float(token.replace(",", "")), 0)]
        token = token.replace(",", ".")  # 21,5 → decimal comma
    token = token.replace(",", "")
    try:
        value = float(token)
    except ValueError:
        return []
    decimals = len(token.partition(".")[2])
    return [(value, decimals)]


def fact_numbers(facts: Iterable[MetricFacts]) -> set[float]:
    """The numbers a summary may cite: every value of every fact."""
    allowed: set[float] = set()
    for fact in facts:
        allowed.update((fact.last, fact.min, fact.max, fact.mean, float(fact.count)))
    return allowed


def check_grounding(
    text: str,
    allowed_numbers: Iterable[float],
    cited_names: Iterable[str],
    known_names: Iterable[str],
) -> GroundingResult:
    """Check ``text`` against the numbers and names it may use.

    ``allowed_numbers``: everything the model was shown (facts, window length, question).
    ``cited_names``: devices and areas in the facts; ``known_names``: every device and area
    the agent knows, so that naming a real sensor that is not in the facts is caught.
    """
    allowed = list(allowed_numbers)
    for value, decimals in numbers_in(text):
        tolerance = 0.5 * 10 ** (-decimals) + 1e-9
        if not any(abs(value - a) <= tolerance for a in allowed):
            return GroundingResult(False, f"number {value:g} is not in the facts")
    lowered = text.lower()
    cited = {n.lower() for n in cited_names}
    for name in known_names:
        key = name.lower()
        if key not in cited and _mentions(lowered, key):
            return GroundingResult(False, f"'{name}' is not in the facts")
    return GroundingResult(True)


def _mentions(text: str, name: str) -> bool:
    """Whole-word mention; underscores in ids also match spaces ('living_room')."""
    variants = {name, name.replace("_", " ")}
    return any(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text) for v in variants)
