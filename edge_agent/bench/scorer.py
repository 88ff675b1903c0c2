"""An independent judge of published texts: every number and state word against raw rows.

It shares nothing with the grounding check (its own words, units and rules) and sees
no findings: only the window's raw readings, the longer baseline around them and the
configured limits. A text has a *role error* when a number belongs to another metric
than the one it is written about (the battery's 94 % called humidity), is not the
current value where the text says "is", has no unit though it is no count, matches no
reading at all, or when a state word contradicts the state (a closed door called open).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

# Families of metrics, with the words and units that name them (en + fr).
_FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "temperature": (
        ("temperature", "temp", "warm", "cool", "cold", "hot", "degrees", "température"),
        ("°c", "ºc", "degrees", "degree", "degrés"),
    ),
    "humidity": (("humidity", "humid", "humidité", "moisture"), ("%", "percent")),
    "battery": (("battery", "batterie"), ("%", "percent")),
    "co2": (("co2", "carbon"), ("ppm",)),
    "light": (
        ("light", "lux", "illuminance", "luminosité", "lumière", "brightness"),
        ("lx", "lux"),
    ),
    "pressure": (("pressure", "pression"), ("hpa",)),
}
_Words = tuple[str, ...]
# family: (words for raw true, words for raw false, verbs to true, verbs to false).
# zigbee2mqtt's contact is true when the magnet touches: closed.
_BINARY: dict[str, tuple[_Words, _Words, _Words, _Words]] = {
    "contact": (("closed", "fermée", "fermé"), ("open", "ouverte", "ouvert"), ("closed",),
                ("opened",)),
    "occupancy": (("occupied", "occupé", "occupée"), ("empty", "vacant", "unoccupied", "vide"),
                  ("arrived",), ("left",)),
}  # fmt: skip
_NEGATIONS = frozenset({"not", "no", "never", "pas", "isn't"})
_IS = frozenset({"is", "at", "now", "currently", "est", "à"})
_OTHER = frozenset(
    {"peak", "peaked", "limit", "above", "below", "from", "usual", "since", "was", "rose",
     "fell", "max", "min", "pic", "limite", "dessus", "dessous", "depuis", "augmenté", "baissé",
     "habituelle", "habitude", "reached"}
)  # fmt: skip
_TOKEN = re.compile(
    r"(?P<time>\b\d{1,2}[:h]\d{2}\b)"
    r"|(?P<num>(?<![\w.])-?\d+(?:[.,]\d+)*)(?:\s?(?P<unit>°\s?c|ºc|%|ppm|lx|lux|hpa|degrees?|"
    r"degrés|percent|times|fois)(?!\w))?"
    r"|(?P<word>[^\W\d_][^\W_]*(?:'[^\W\d_]+)?)"
    r"|(?P<stop>[.!?;,()])",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Row:
    """One raw reading."""

    ts: float
    metric: str
    value: float


@dataclass(frozen=True, slots=True)
class RoleError:
    """One wrong claim in a text."""

    kind: str
    """``invented``, ``wrong-role``, ``not-current``, ``unitless``, ``time``, ``wrong-state``."""
    detail: str


@dataclass(frozen=True, slots=True)
class Window:
    """What the judge knows: the window's rows, the baseline's rows, the limits."""

    rows: Sequence[Row]
    baseline: Sequence[Row] = ()
    limits: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    """Per family, the configured limits a text may cite."""
    tz: tzinfo = UTC


def family(metric: str) -> str | None:
    """The family of a raw metric name."""
    m = metric.lower()
    if "ratio" in m:
        return None
    for key, needle in (
        ("temperature", "temp"), ("humidity", "humid"), ("co2", "co2"), ("light", "illum"),
        ("light", "light"), ("light", "lux"), ("battery", "battery"), ("pressure", "pressure"),
        ("contact", "contact"), ("occupancy", "occup"),
    ):  # fmt: skip
        if needle in m:
            return key
    return None


def _kind(match: re.Match[str]) -> str:
    return next(k for k in ("time", "num", "word", "stop") if match.group(k) is not None)


def _read(token: str) -> tuple[float, int]:
    if "," in token and "." not in token:
        head, _, tail = token.rpartition(",")
        if len(tail) == 3 and head.lstrip("-").isdigit():
            return float(token.replace(",", "")), 0
        token = token.replace(",", ".")
    token = token.replace(",", "")
    return float(token), len(token.partition(".")[2])


def score(text: str, window: Window) -> list[RoleError]:
    """Every wrong claim in ``text`` about ``window``."""
    toks = [(_kind(m), m) for m in _TOKEN.finditer(text)]
    by_family: dict[str, list[Row]] = {}
    for row in window.rows:
        fam = family(row.metric)
        if fam:
            by_family.setdefault(fam, []).append(row)
    base: dict[str, list[Row]] = {}
    for row in window.baseline:
        fam = family(row.metric)
        if fam:
            base.setdefault(fam, []).append(row)
    errors: list[RoleError] = []
    words = [(i, m.group("word").lower()) for i, (k, m) in enumerate(toks) if k == "word"]
    for i, (kind, m) in enumerate(toks):
        if kind == "time":
            errors.extend(_time(m.group("time"), window))
        elif kind == "num":
            errors.extend(_number(i, m, toks, words, by_family, base, window))
        elif kind == "word":
            errors.extend(_state(i, m.group("word").lower(), toks, by_family))
    return errors


def _clause_words(
    i: int, toks: Sequence[tuple[str | None, re.Match[str]]]
) -> list[tuple[float, str]]:
    """Words around token ``i`` up to the next number or stop, nearest first (a word
    before counts as nearer than one after at the same distance)."""
    out: list[tuple[float, str]] = []
    j = i - 1
    while j >= 0 and toks[j][0] == "word":
        out.append((i - j, toks[j][1].group("word").lower()))
        j -= 1
    j = i + 1
    while j < len(toks) and toks[j][0] == "word" and j - i <= 2:
        out.append((j - i + 0.5, toks[j][1].group("word").lower()))
        j += 1
    return sorted(out)


def _number(
    i: int,
    m: re.Match[str],
    toks: Sequence[tuple[str | None, re.Match[str]]],
    words: Sequence[tuple[int, str]],
    rows: Mapping[str, list[Row]],
    base: Mapping[str, list[Row]],
    window: Window,
) -> list[RoleError]:
    value, decimals = _read(m.group("num"))
    unit = (m.group("unit") or "").lower().replace(" ", "").replace("º", "°")
    tol = 0.5 * 10 ** (-decimals) + 1e-9
    shown = m.group(0).strip()
    if unit in ("times", "fois"):
        counts = {
            sum(1 for a, b in itertools.pairwise(rs) if a.value != b.value and b.value == v)
            for rs in rows.values()
            for v in (0.0, 1.0)
        }
        if int(value) in counts:
            return []
        return [RoleError("invented", f"no sensor changed {shown}")]
    if not unit:
        return [RoleError("unitless", f"{shown} has no unit and is no count")]
    fams = [f for f, (_, units) in _FAMILIES.items() if unit in units]
    clause = _clause_words(i, toks)
    named = next((f for _, w in clause for f, (ws, _) in _FAMILIES.items() if w in ws), None)
    if named in fams:
        fams = [named]
    elif named is not None and named not in fams:
        return [RoleError("wrong-role", f"{shown} is written about {named}")]
    elif len(fams) > 1:
        fams = [f for f in fams if f in rows] or fams
    before = {w for d, w in clause if d <= 3}
    current_claim = bool(before & _IS) and not before & _OTHER

    def fits(fam: str) -> bool:
        values = [r.value for r in rows.get(fam, [])]
        extra = list(window.limits.get(fam, ()))
        if base.get(fam):
            # "its usual N": the mean of the baseline, which ends with the window.
            values_b = [r.value for r in (*base[fam], *rows.get(fam, []))]
            extra.append(sum(values_b) / len(values_b))
        return any(abs(value - v) <= tol for v in (*values, *extra))

    own = [f for f in fams if fits(f)]
    if not own:
        others = [f for f in rows if f not in fams and fits(f)]
        if others:
            return [RoleError("wrong-role", f"{shown} is a reading of {others[0]}")]
        return [RoleError("invented", f"{shown} is no reading")]
    if current_claim:
        lasts = [rows[f][-1].value for f in own if rows.get(f)]
        if lasts and not any(abs(value - v) <= tol for v in lasts):
            return [RoleError("not-current", f"{shown} is not the current {own[0]}")]
    return []


def _time(text: str, window: Window) -> list[RoleError]:
    hours, _, minutes = text.replace("h", ":").partition(":")
    target = int(hours) * 60 + int(minutes)
    for row in (*window.rows, *window.baseline):
        t = datetime.fromtimestamp(row.ts, window.tz)
        if abs(t.hour * 60 + t.minute - target) <= 1:
            return []
    return [RoleError("time", f"no reading at {text}")]


def _state(
    i: int,
    word: str,
    toks: Sequence[tuple[str | None, re.Match[str]]],
    rows: Mapping[str, list[Row]],
) -> list[RoleError]:
    for fam, (on_words, off_words, to_on, to_off) in _BINARY.items():
        series = rows.get(fam)
        if not series:
            continue
        prev = {toks[j][1].group(0).lower() for j in range(max(0, i - 2), i)}
        negated = bool(prev & _NEGATIONS)
        last = series[-1].value >= 0.5
        values = [r.value >= 0.5 for r in series]
        reached = {b for a, b in itertools.pairwise(values) if a != b}
        # "was open", "a été ouverte": a past state, true if the window reached it.
        past = bool(prev & {"was", "were", "été"})
        if word in on_words or word in off_words:
            said = word in on_words
            if negated:
                said = not said
            if said != last and not ((word in to_on or past) and said in reached):
                state = on_words[0] if last else off_words[0]
                return [RoleError("wrong-state", f"'{word}' but the {fam} is {state}")]
        elif word in to_off and False not in reached:
            return [RoleError("wrong-state", f"'{word}' but no change to {off_words[0]}")]
    return []


def rows_from(readings: Iterable[tuple[float, str, float]]) -> list[Row]:
    """Rows from (ts, metric, value) triples, oldest first."""
    return sorted((Row(ts, metric, value) for ts, metric, value in readings), key=lambda r: r.ts)
