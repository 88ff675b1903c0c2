"""The grounding check: a generated text may only use numbers and names found in its facts.

A 2B model invents numbers. Code checks every number in the text against the numbers
the model was shown (within the rounding the text uses), every number written with a
unit against the readings in that unit (a small model happily calls a 42.8 % humidity
"42.8 °C"), and every known device or area name against the facts behind the summary.
A failed check means the caller publishes a deterministic fallback instead.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
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
    return [found for token in _NUMBER.findall(text) if (found := _reading(token))]


def _reading(token: str) -> tuple[float, int] | None:
    """The most likely reading of a number token as (value, decimals), or None."""
    if "," in token and "." not in token:
        head, _, tail = token.rpartition(",")
        if len(tail) == 3 and head.lstrip("-").isdigit():  # 1,400 → thousands
            return float(token.replace(",", "")), 0
        token = token.replace(",", ".")  # 21,5 → decimal comma
    token = token.replace(",", "")
    try:
        value = float(token)
    except ValueError:
        return None
    return value, len(token.partition(".")[2])


def _readings_of(fact: MetricFacts) -> list[float]:
    """The values of ``fact`` in its unit, as the prompt shows them: levels and trend."""
    values = [fact.last, fact.min, fact.max, fact.mean]
    if fact.slope_per_h is not None:
        values.append(abs(fact.slope_per_h))
    return values


def fact_numbers(facts: Iterable[MetricFacts]) -> set[float]:
    """The numbers a summary may cite: every value of every fact, its count too."""
    allowed: set[float] = set()
    for fact in facts:
        allowed.update(_readings_of(fact))
        allowed.add(float(fact.count))
    return allowed


def _fold_degree(text: str) -> str:
    """The ordinal sign (º), a common look-alike, read as the degree sign (°)."""
    return text.replace("\u00ba", "\u00b0")


def unit_key(unit: str) -> str:
    """How units compare: case, spaces and the ordinal-sign look-alike of ° do not count."""
    return _fold_degree(unit).replace(" ", "").lower()


# Words a text may use for a unit symbol; each maps to the symbols it can stand for.
_UNIT_WORDS = {"degrees": ("°c", "°f"), "degree": ("°c", "°f"), "percent": ("%",)}


def fact_units(facts: Iterable[MetricFacts]) -> dict[str, set[float]]:
    """Unit -> the values a summary may write with that unit: levels and hourly trends."""
    units: dict[str, set[float]] = {}
    for fact in facts:
        if fact.unit:
            units.setdefault(unit_key(fact.unit), set()).update(_readings_of(fact))
    return units


def quantities_in(
    text: str, units: Collection[str]
) -> list[tuple[float, int, tuple[str, ...], str]]:
    """Numbers written right before one of ``units`` (keys of ``unit_key``), or a word
    for one: (value, decimals, the units it may be in, the unit as written)."""
    spelled: dict[str, tuple[str, ...]] = {unit: (unit,) for unit in units}
    for word, symbols in _UNIT_WORDS.items():
        meant = tuple(u for u in symbols if u in units)
        if meant:
            spelled[word] = meant
    if not spelled:
        return []
    # Longest first, so "kwh" is not read as "kw"; a unit ends where a word would.
    options = "|".join(re.escape(u) for u in sorted(spelled, key=len, reverse=True))
    pattern = re.compile(rf"({_NUMBER.pattern})\s?({options})(?!\w)", re.IGNORECASE)
    found = []
    for match in pattern.finditer(_fold_degree(text)):
        if reading := _reading(match.group(1)):
            found.append((*reading, spelled[match.group(2).lower()], match.group(2)))
    return found


def check_grounding(
    text: str,
    allowed_numbers: Iterable[float],
    cited_names: Iterable[str],
    known_names: Iterable[str],
    units: Mapping[str, Collection[float]] | None = None,
) -> GroundingResult:
    """Check ``text`` against the numbers and names it may use.

    ``allowed_numbers``: everything the model was shown (facts, window length, question).
    ``cited_names``: devices and areas in the facts; ``known_names``: every device and area
    the agent knows, so that naming a real sensor that is not in the facts is caught.
    ``units``: unit (``unit_key``) -> the values readable in it (``fact_units``); a number
    written with one of these units must be one of its values.
    """
    allowed = list(allowed_numbers)
    for value, decimals in numbers_in(text):
        if not _near(value, decimals, allowed):
            return GroundingResult(False, f"number {value:g} is not in the facts")
    readings = units or {}
    for value, decimals, meant, written in quantities_in(text, readings):
        if not any(_near(value, decimals, readings[unit]) for unit in meant):
            return GroundingResult(False, f"no reading in {written} is {value:g}")
    lowered = text.lower()
    cited = {n.lower() for n in cited_names}
    for name in known_names:
        key = name.lower()
        if key not in cited and _mentions(lowered, key):
            return GroundingResult(False, f"'{name}' is not in the facts")
    return GroundingResult(True)


def _near(value: float, decimals: int, allowed: Iterable[float]) -> bool:
    """``value`` equals one of ``allowed`` within the rounding its written decimals imply."""
    tolerance = 0.5 * 10 ** (-decimals) + 1e-9
    return any(abs(value - a) <= tolerance for a in allowed)


def _mentions(text: str, name: str) -> bool:
    """Whole-word mention; underscores in ids also match spaces ('living_room')."""
    variants = {name, name.replace("_", " ")}
    return any(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text) for v in variants)
