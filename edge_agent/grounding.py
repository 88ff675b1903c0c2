"""Grounding v2: a text may only say what the findings it was built from say.

Rules, checked in this order (the first broken one is the reason):

* no raw id: an underscore, or the id of a known device or area;
* every clock time is the time of a shown finding;
* every number is a number of a shown finding, within the rounding the text uses,
  written in that number's unit (a number without a unit only for counts);
* next to the words of its subject: when the nearest metric or device words in the
  sentence belong to other findings, the number plays the wrong role ("humidity is
  94 %" with the battery's 94 %);
* "X is (at) N" must be X's current value, not its peak, limit or usual value;
* every state word (open/closed, occupied/empty, on/off..., per language) matches
  the state of the finding it is about, or a state a change reached in the window;
* a yes/no answer agrees with the state the question asks about;
* no name of another device or area, and none of the few-shot examples' names.

A failed check means the caller publishes a deterministic fallback instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_agent.findings import Finding
from edge_agent.mentions import NameIndex
from edge_agent.prompts import relevant, yes_no
from edge_agent.semantics import Number
from edge_agent.words import LEVEL_WORDS, VOCABULARIES

# Numbers as people write them: -3, 21.5, 21,5 (fr decimal comma), 1,400 (thousands).
_NUMBER = r"-?\d+(?:[.,]\d+)*"
_UNIT = (
    r"°\s?[cf]|º\s?[cf]|%|ppm|lx|lux|hpa|db|µg/m³|kwh|w|mv|v|degrees?|degrés?|percent|"
    r"pour\s?cent|times|fois|minutes?|min"
)
_TOKEN = re.compile(
    rf"(?P<time>(?<![\w.,])\d{{1,2}}[:h]\d{{2}}(?!\d))"
    rf"|(?P<num>(?<![\w.])(?:{_NUMBER}))(?:\s?(?P<unit>{_UNIT})(?![\w]))?"
    r"|(?P<word>[^\W\d_][^\W_]*(?:['’][^\W\d_]+)*)"
    r"|(?P<stop>[.!?;](?=\s|$))",
    re.IGNORECASE,
)
_UNIT_KEYS = {
    "degree": ("°c", "°f"),
    "degrees": ("°c", "°f"),
    "degré": ("°c", "°f"),
    "degrés": ("°c", "°f"),
    "percent": ("%",),
    "pourcent": ("%",),
    "lux": ("lx",),
    "times": ("count",),
    "fois": ("count",),
}
# Words after which a number must be the subject's current value.
_LEVEL_CUES = frozenset({"is", "at", "now", "currently", "reads", "sits", "est", "à", "vaut"})
# Words that give a number another role (peak, limit, usual value, start of a change).
_ROLE_CUES = frozenset(
    {"peak", "peaked", "max", "maximum", "limit", "above", "below", "over", "under", "from",
     "usual", "usually", "normal", "reached", "was", "were", "rose", "fell", "up", "down",
     "since", "pic", "limite", "dessus", "dessous", "habituelle", "habitude", "depuis",
     "augmenté", "baissé", "était", "threshold", "seuil", "atteint", "came", "went"}
)  # fmt: skip
_NEGATIONS = frozenset({"not", "no", "never", "isn't", "aren't", "wasn't", "pas", "plus"})
# State words too common to count without a verb before them ("based on", "left").
_COMMON = frozenset({"on", "off", "home", "away", "left", "dry", "shut"})
_COPULAS = frozenset(
    {"is", "are", "was", "were", "been", "turned", "switched", "now", "stays", "remains", "still"}
)
_BARRIERS = frozenset(
    {"and", "but", "while", "with", "et", "mais", "avec", "alors", "when", "quand", "lorsque"}
)
# Words before a state word that say a state was reached then, not that it holds now.
_BECAME = frozenset({"became", "become", "got", "turned", "devenu", "devenue", "passé", "passée"})
_CHANGE_REACH = 6
"""Words before a level's before/after value that may carry the verb of its change."""
_REACH = 5
"""Words before a number that may still name its subject."""
_YES = frozenset({"yes", "oui"})
# State words that are also the verb of reaching the state.
_VERBS = frozenset({"closed", "shut", "fermée", "locked", "unlocked"})
_NO = frozenset({"no", "non"})


@dataclass(frozen=True, slots=True)
class GroundingResult:
    """Outcome of the check; ``reason`` says what was wrong."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    unit: str
    index: int
    sentence: int


def tokens(text: str) -> list[_Tok]:
    """Words, numbers (with the unit written after them), times and sentence ends."""
    out: list[_Tok] = []
    sentence = 0
    for match in _TOKEN.finditer(text.replace("\u00a0", " ").replace("\u202f", " ")):
        kind = next(k for k in ("time", "num", "word", "stop") if match.group(k) is not None)
        if kind == "stop":
            sentence += 1
            continue
        unit = (match.group("unit") or "") if kind == "num" else ""
        out.append(_Tok(kind, match.group(kind), unit, len(out), sentence))
    return out


def read_number(token: str) -> tuple[float, int] | None:
    """The most likely reading of a number token as (value, decimals written), or None."""
    if "," in token and "." not in token:
        head, _, tail = token.rpartition(",")
        if len(tail) == 3 and head.lstrip("-").isdigit():  # 1,400 -> thousands
            return float(token.replace(",", "")), 0
        token = token.replace(",", ".")  # 21,5 -> decimal comma
    token = token.replace(",", "")
    try:
        value = float(token)
    except ValueError:
        return None
    return value, len(token.partition(".")[2])


def unit_key(unit: str) -> tuple[str, ...]:
    """The unit keys a written unit may stand for (case, spaces and º do not count)."""
    key = unit.replace("\u00ba", "\u00b0").replace(" ", "").lower()
    return _UNIT_KEYS.get(key, (key,))


def _near(value: float, decimals: int, number: Number) -> bool:
    return bool(abs(value - number.value) <= 0.5 * 10 ** (-decimals) + 1e-9)


def _clock(text: str) -> str:
    hours, _, minutes = text.replace("h", ":").partition(":")
    return f"{int(hours):02d}:{minutes}"


class _Words:
    """Which shown findings each word of the text may name."""

    def __init__(self, shown: Sequence[Finding]) -> None:
        self.by_word: dict[str, set[int]] = {}
        # Words of metrics no finding shows name "another subject" (owner -1): a number
        # next to them ("CO2 at 21.3 °C" without a CO2 finding) is in the wrong role.
        for word in LEVEL_WORDS:
            self.by_word.setdefault(word, set()).add(-1)
        for i, f in enumerate(shown):
            # Area words name every finding of the area alike: they attribute nothing.
            area = {w.lower() for w in re.findall(r"\w+", f.area_name)}
            area |= {w.lower() for w in re.findall(r"[^\W_]+", f.area or "")}
            subject = {w.lower() for w in re.findall(r"\w+", f.subject)}
            for word in (set(f.words) | subject) - area:
                owners = self.by_word.setdefault(word, set())
                owners.discard(-1)
                owners.add(i)

    def nearest(self, toks: Sequence[_Tok], at: int) -> set[int]:
        """Findings named by the words nearest to token ``at`` in its sentence."""
        best, found = 10**6, set()
        sentence = toks[at].sentence
        # The words of its clause: between the numbers (or "and", "but"...) around it,
        # and no further than a few words.
        low = max(
            (t.index for t in toks[:at] if t.kind != "word" or t.text.lower() in _BARRIERS),
            default=-1,
        )
        high = min(
            (t.index for t in toks[at + 1 :] if t.kind != "word" or t.text.lower() in _BARRIERS),
            default=len(toks),
        )
        low, high = max(low, at - _REACH - 1), min(high, at + 3)
        for tok in toks[low + 1 : high]:
            if tok.kind != "word" or tok.sentence != sentence:
                continue
            owners = self.by_word.get(tok.text.lower())
            if not owners:
                continue
            # A word before the number reads as its subject more often than one after.
            distance = abs(tok.index - at) * 2 + (1 if tok.index > at else 0)
            if distance < best:
                best, found = distance, set(owners)
            elif distance == best:
                found |= owners
        return found


def check(
    text: str,
    shown: Sequence[Finding],
    *,
    language: str = "en",
    known_names: Iterable[str] | NameIndex = (),
    forbidden: Iterable[str] = (),
    question: str = "",
) -> GroundingResult:
    """Check ``text`` against the findings it was built from (see the module doc)."""
    if "_" in text:
        return GroundingResult(False, "raw id in the text")
    toks = tokens(text)
    words = _Words(shown)
    for step in (_times, _numbers, _states):
        reason = step(toks, shown, words, language)
        if reason:
            return GroundingResult(False, reason)
    if question:
        reason = _verdict(toks, question, shown, language)
        if reason:
            return GroundingResult(False, reason)
    reason = _names(text, shown, known_names, forbidden)
    return GroundingResult(not reason, reason)


def _times(toks: Sequence[_Tok], shown: Sequence[Finding], words: _Words, language: str) -> str:
    times = {n.text for f in shown for n in f.numbers if n.unit == "time"}
    for tok in toks:
        if tok.kind == "time" and _clock(tok.text) not in times:
            return f"time {tok.text} is not in the findings"
    return ""


def _numbers(toks: Sequence[_Tok], shown: Sequence[Finding], words: _Words, language: str) -> str:
    for tok in toks:
        if tok.kind != "num":
            continue
        reading = read_number(tok.text)
        if reading is None:
            return f"number {tok.text} cannot be read"
        value, decimals = reading
        cands = [
            (i, n)
            for i, f in enumerate(shown)
            for n in f.numbers
            if n.unit != "time" and _near(value, decimals, n)
        ]
        if not cands:
            return f"number {value:g} is not in the findings"
        if tok.unit:
            meant = unit_key(tok.unit)
            cands = [
                (i, n)
                for i, n in cands
                if (n.role == "count" and "count" in meant) or (unit_key(n.unit)[0] in meant)
            ]
            if not cands:
                return f"no finding has {value:g} {tok.unit}"
        else:
            cands = [(i, n) for i, n in cands if n.unit == ""]
            if not cands:
                return f"number {value:g} is written without its unit"
        near = words.nearest(toks, tok.index)
        if near and not near & {i for i, _ in cands}:
            owner = min(near)
            subject = shown[owner].subject if owner >= 0 else "another metric"
            return f"{value:g} is not a number of {subject}"
        before = {
            t.text.lower()
            for t in toks[max(0, tok.index - 3) : tok.index]
            if t.kind == "word" and t.sentence == tok.sentence
        }
        current = any(n.role in ("now", "count") for _, n in cands)
        if before & _LEVEL_CUES and not before & _ROLE_CUES and not current:
            # "rose from 0 lx to 450 lx", "a augmenté de 0 lx à 450 lx": the verb of the
            # change is further back than "to"/"à", and still gives the number its role.
            clause = {
                t.text.lower()
                for t in toks[max(0, tok.index - _CHANGE_REACH) : tok.index]
                if t.kind == "word" and t.sentence == tok.sentence
            }
            change = all(n.role in ("from", "to") for _, n in cands)
            if not (change and clause & _ROLE_CUES):
                return f"{value:g} is not the current value"
    return ""


def _phrases(language: str) -> dict[str, list[tuple[str, bool, str]]]:
    """Each state word -> (vocabulary, the state it says, current or event)."""
    out: dict[str, list[tuple[str, bool, str]]] = {}
    for key, vocab in VOCABULARIES.items():
        for lang in {"en", language}:
            words = vocab.lang(lang)
            for state in (True, False):
                for word in words.current(state):
                    out.setdefault(word.lower(), []).append((key, state, "current"))
                for word in words.event(state):
                    out.setdefault(word.lower(), []).append((key, state, "event"))
    return out


def _states(toks: Sequence[_Tok], shown: Sequence[Finding], words: _Words, language: str) -> str:
    phrases = _phrases(language)
    longest = max(len(p.split()) for p in phrases)
    i = 0
    lowered = [t.text.lower() for t in toks]
    while i < len(toks):
        match = ""
        for size in range(longest, 0, -1):
            candidate = " ".join(lowered[i : i + size])
            if all(t.kind == "word" for t in toks[i : i + size]) and candidate in phrases:
                match = candidate
                break
        if not match:
            i += 1
            continue
        prev = [lowered[j] for j in range(max(0, i - 2), i) if toks[j].sentence == toks[i].sentence]
        if match in _COMMON and not set(prev) & _COPULAS:
            i += len(match.split())
            continue
        negated = bool(set(prev) & _NEGATIONS)
        reason = _state_ok(match, phrases[match], negated, i, toks, shown, words, frozenset(prev))
        if reason:
            return reason
        i += len(match.split())
    return ""


def _state_ok(
    word: str,
    meanings: list[tuple[str, bool, str]],
    negated: bool,
    at: int,
    toks: Sequence[_Tok],
    shown: Sequence[Finding],
    words: _Words,
    prev: frozenset[str] = frozenset(),
) -> str:
    cands = [
        (i, f)
        for i, f in enumerate(shown)
        if f.vocabulary is not None and any(m[0] == f.vocabulary.key for m in meanings)
    ]
    if not cands:
        return f"'{word}' is not a state in the findings"
    if not negated and prev & _BECAME:
        # "when Office became empty": the state an explained change's cause reached then,
        # whatever the state of the same subject now.
        for _, f in cands:
            vocab = f.vocabulary
            assert vocab is not None
            if f.kind == "explained" and any(
                key == vocab.key and state in f.reached for key, state, _ in meanings
            ):
                return ""
    near = words.nearest(toks, at)
    named = [(i, f) for i, f in cands if i in near] or cands
    for _, f in named:
        assert f.vocabulary is not None
        for key, state, how in meanings:
            if key != f.vocabulary.key:
                continue
            said = (not state) if negated else state
            if how == "current" and said == f.state:
                return ""
            if how == "event" and not negated and state in f.reached:
                return ""
            # "closed" is also the verb: the door closed at 09:40.
            if how == "current" and not negated and state in f.reached and word in _VERBS:
                return ""
    return f"'{word}' does not match the state of {named[0][1].subject}"


def _verdict(toks: Sequence[_Tok], question: str, shown: Sequence[Finding], language: str) -> str:
    first = next((t.text.lower() for t in toks if t.kind == "word"), "")
    if first not in _YES | _NO:
        return ""
    about = relevant(question, shown, 1)
    if not about:
        return "a yes/no answer about nothing shown"
    expected = yes_no(question, about[0], language).lower()
    if not expected:
        return "a yes/no answer the findings cannot decide"
    said_yes = first in _YES
    if said_yes != (expected in _YES):
        return f"'{first}' contradicts the state of {about[0].subject}"
    return ""


def _names(
    text: str,
    shown: Sequence[Finding],
    known_names: Iterable[str] | NameIndex,
    forbidden: Iterable[str],
) -> str:
    lowered = text.lower()
    cited: set[str] = set()
    for f in shown:
        cited.update(n.lower() for n in (f.device, f.subject, f.area_name, f.area or "") if n)
        cited.update(f.words)
    # Known names can be thousands: read the text once against their index (a regex per
    # name cost 50 ms at a thousand devices). The prompt's example words are a handful.
    index = known_names if isinstance(known_names, NameIndex) else NameIndex(known_names)
    for name in index.mentioned(text):
        if name.lower() not in cited:
            return f"'{name}' is not in the findings"
    for name in forbidden:
        key = name.lower()
        if key and key not in cited and _mentions(lowered, key):
            return f"'{name}' is not in the findings"
    return ""


def _mentions(text: str, name: str) -> bool:
    """Whole-word mention; underscores in ids also match spaces ('living_room')."""
    variants = {name, name.replace("_", " ")}
    return any(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text) for v in variants)


def states_finding(text: str, finding: Finding) -> bool:
    """Whether ``text`` states ``finding``: one of its numbers, or its state word."""
    written = [(read_number(t.text), t.unit) for t in tokens(text) if t.kind == "num"]
    for number in finding.numbers:
        if number.unit == "time" and number.text in text:
            return True
        for reading, _ in written:
            if reading and abs(reading[0] - number.value) <= 0.5 * 10 ** (-reading[1]) + 1e-9:
                return True
    if finding.vocabulary is not None and finding.state is not None:
        lowered = text.lower()
        return any(
            _mentions(lowered, word)
            for lang in finding.vocabulary.words.values()
            for word in (*lang.current(finding.state), *lang.event(finding.state))
        )
    return False
