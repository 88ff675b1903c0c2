"""Every prompt the narrator sends, built from findings (pure code).

The prompt's shape follows the model folder's ``prompt_format``: ``chat`` models get
instructions and notes in one user turn; ``completion`` (base) models get a few-shot
completion that ends where the answer starts, and stop at a blank line. The static part
(instructions, home description, examples) comes first so the runtime can serve it
from its prefix KV cache.

The model never sees a raw reading: a summary prompt holds the top findings as short
notes ("occupied since 08:12", "CO2 952 ppm, above the 900 ppm limit, rising"); an
answer prompt holds the findings the question is about. The few-shot examples' numbers
are checked against the citable ones and swapped when one could be mistaken for a
real reading, so a copied example number always fails the grounding check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from edge_agent.domain import Anomaly, MetricFacts
from edge_agent.findings import Finding
from edge_agent.semantics import Number
from edge_agent.wording import wording

PROMPT_VERSION = "narrate-v5"
TITLE_MAX = 255  # Home Assistant caps a state at 255 characters.
MAX_NOTES = 4
"""Findings shown for a summary: the top ones; more only dilutes a small model."""
QUIET_NOTES = 3
"""Findings shown when nothing is notable."""

PromptFormat = Literal["chat", "completion"]

# Radio and housekeeping readings, for the action prompt's fact lines.
DIAGNOSTIC_METRICS = frozenset(
    {"linkquality", "rssi", "wifi_rssi", "wifi_signal", "uptime", "update_available"}
)

LANGUAGES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
    "pl": "Polish",
    "sv": "Swedish",
    "da": "Danish",
}


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt split into its cacheable static prefix and the per-request rest."""

    static: str
    dynamic: str
    stop: tuple[str, ...] = ()
    fact_ids: tuple[str, ...] = ()
    example_words: tuple[str, ...] = ()
    """Names only the examples use: a text that borrows one is about another home."""

    @property
    def text(self) -> str:
        """The whole user text (the model folder's template wraps it)."""
        return self.static + self.dynamic


# --- few-shot examples -----------------------------------------------------------------
# Placeholders {name} take the first candidate that no shown finding could cite, so a
# number the model copies from an example can never pass as a reading.
_CANDIDATES: dict[str, tuple[str, ...]] = {
    "t1": ("07:48", "06:52", "05:37"),
    "t2": ("13:26", "14:53", "12:17"),
    "c1": ("1,130", "1,270", "1,390"),
    "c2": ("1,100", "1,250", "1,350"),
    "c3": ("512", "587", "634"),
    "T1": ("23.7", "24.6", "19.3"),
    "T2": ("9.6", "8.3", "11.2"),
    "T3": ("24.2", "25.7", "18.1"),
    "T4": ("17.6", "16.3", "26.1"),
    "h1": ("49", "38", "57"),
    "h2": ("81", "88", "73"),
    "h3": ("53", "61", "34"),
    "n1": ("4", "5", "6"),
}
_FR = {"T1", "T2", "T3", "T4"}  # decimals written with a comma in French

_SUMMARY_EXAMPLES = {
    "en": (
        "Notes (Study):\n- Study occupied since {t1}\n- CO2 {c1} ppm, above the {c2} ppm "
        "limit, rising\n- temperature {T1} °C\n"
        "Summary: The study has been occupied since {t1}, and CO2 is {c1} ppm, above the "
        "{c2} ppm limit and rising.\n\n"
        "Notes (Garage):\n- Garage door opened {n1} times, last at {t2}, now closed\n"
        "- temperature {T2} °C\n"
        "Summary: The garage door opened {n1} times, last at {t2}; it is closed now.\n\n"
        "Notes (Bathroom):\n- humidity rose from {h1} % to {h2} %\n- temperature {T3} °C\n"
        "Summary: Humidity in the bathroom rose from {h1} % to {h2} %; the temperature is "
        "{T3} °C.\n\n"
        "Notes (Bedroom):\n- nothing notable\n- temperature {T4} °C\n- humidity {h3} %\n"
        "- CO2 {c3} ppm\n"
        "Summary: All quiet in the bedroom: {T4} °C, {h3} % humidity and CO2 at {c3} ppm.\n\n"
    ),
    "fr": (
        "Notes (Bureau) :\n- Bureau occupé depuis {t1}\n- CO2 {c1} ppm, au-dessus de la "
        "limite de {c2} ppm, en hausse\n- température {T1} °C\n"
        "Résumé : Le bureau est occupé depuis {t1} et le CO2 est à {c1} ppm, au-dessus de "
        "la limite de {c2} ppm et en hausse.\n\n"
        "Notes (Garage) :\n- Porte du garage ouverte {n1} fois, la dernière à {t2}, fermée "
        "maintenant\n- température {T2} °C\n"
        "Résumé : La porte du garage a été ouverte {n1} fois, la dernière à {t2} ; elle "
        "est fermée maintenant.\n\n"
        "Notes (Salle de bain) :\n- humidité a augmenté de {h1} % à {h2} %\n"
        "- température {T3} °C\n"
        "Résumé : L'humidité de la salle de bain a augmenté de {h1} % à {h2} % ; il fait "
        "{T3} °C.\n\n"
        "Notes (Chambre) :\n- rien à signaler\n- température {T4} °C\n- humidité {h3} %\n"
        "- CO2 {c3} ppm\n"
        "Résumé : Rien à signaler dans la chambre : {T4} °C, {h3} % d'humidité et CO2 à "
        "{c3} ppm.\n\n"
    ),
}
_ANSWER_EXAMPLES = {
    "en": (
        "Notes:\n- Garage: Garage door closed since {t2}\n- Garage: temperature {T2} °C\n"
        "Question: Is the garage door open?\n"
        "Answer: No, the garage door has been closed since {t2}.\n\n"
        "Notes:\n- Study: CO2 {c1} ppm, above the {c2} ppm limit, rising\n"
        "Question: How is the air in the study?\n"
        "Answer: CO2 in the study is {c1} ppm, above the {c2} ppm limit and rising.\n\n"
    ),
    "fr": (
        "Notes :\n- Garage : Porte du garage fermée depuis {t2}\n- Garage : température "
        "{T2} °C\nQuestion : La porte du garage est-elle ouverte ?\n"
        "Réponse : Non, la porte du garage est fermée depuis {t2}.\n\n"
        "Notes :\n- Bureau : CO2 {c1} ppm, au-dessus de la limite de {c2} ppm, en hausse\n"
        "Question : Comment est l'air du bureau ?\n"
        "Réponse : Le CO2 du bureau est à {c1} ppm, au-dessus de la limite de {c2} ppm "
        "et en hausse.\n\n"
    ),
}
_EXAMPLE_WORDS = ("study", "garage", "bathroom", "bedroom", "bureau", "salle de bain", "chambre")
_LABELS = {
    "en": ("Notes", "Summary:", "Answer:", "Question:", "nothing notable"),
    "fr": ("Notes", "Résumé :", "Réponse :", "Question :", "rien à signaler"),
}


def _value(text: str) -> float:
    return float(text.replace(",", "")) if ":" not in text else -1.0


def _collides(text: str, citable: Iterable[Number]) -> bool:
    if ":" in text:
        return any(n.text == text for n in citable)
    value = _value(text)
    decimals = len(text.partition(".")[2])
    tolerance = 0.5 * 10 ** (-decimals) + 1e-9
    return any(abs(n.value - value) <= max(tolerance, 0.5) for n in citable if n.unit != "time")


def fill_examples(template: str, citable: Sequence[Number], language: str) -> str:
    """The examples with the first candidate numbers no citable number is near."""
    chosen: dict[str, str] = {}
    for key, options in _CANDIDATES.items():
        pick = next((o for o in options if not _collides(o, citable)), options[-1])
        if language == "fr":
            pick = pick.replace(",", "") if key not in _FR else pick.replace(".", ",")
        chosen[key] = pick
    return template.format(**chosen)


def _instructions(language: str, home: str, answer: bool) -> str:
    lang = LANGUAGES.get(language, language)
    about = f" {home.strip()}" if home.strip() else ""
    task = (
        "You answer questions about a home from its sensor notes."
        if answer
        else "You summarise a home's sensor notes for the people who live here."
    )
    return (
        f"{task}{about} Write in {lang}, in one or two short sentences. Use only the "
        "notes' numbers and times, each with its unit, and add nothing the notes do not "
        "say.\n\n"
    )


def _note(finding: Finding, with_area: bool, language: str) -> str:
    sep = " : " if language == "fr" else ": "
    return f"- {finding.area_name}{sep}{finding.phrase}" if with_area else f"- {finding.phrase}"


def notes(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """The findings a summary shows: the top four, three when nothing is notable (the
    model then states what leads them rather than picking one)."""
    return tuple(findings[: MAX_NOTES if any(f.notable for f in findings) else QUIET_NOTES])


def summary_prompt(
    area_name: str,
    findings: Sequence[Finding],
    *,
    style: PromptFormat,
    language: str = "en",
    home: str = "",
) -> Prompt:
    """The prompt asking for a summary of one area's top findings."""
    shown = tuple(findings[:MAX_NOTES])
    labels = _LABELS.get(language, _LABELS["en"])
    lines = [_note(f, False, language) for f in shown]
    if not any(f.notable for f in shown):
        lines.insert(0, f"- {labels[4]}")
    colon = " :" if language == "fr" else ":"
    notes = f"{labels[0]} ({area_name}){colon}\n" + "\n".join(lines) + "\n"
    return _prompt(
        shown,
        answer=False,
        completion=(notes + labels[1], ("\n\n", "\nNotes")),
        chat=notes + "Summarise these notes.",
        style=style,
        language=language,
        home=home,
    )


def answer_prompt(
    question: str,
    findings: Sequence[Finding],
    *,
    style: PromptFormat,
    language: str = "en",
    home: str = "",
) -> Prompt:
    """The prompt answering ``question`` from the findings it is about."""
    labels = _LABELS.get(language, _LABELS["en"])
    colon = " :" if language == "fr" else ":"
    notes = f"{labels[0]}{colon}\n" + "\n".join(_note(f, True, language) for f in findings)
    clean = " ".join(question.split())
    return _prompt(
        findings,
        answer=True,
        completion=(
            f"{notes}\n{labels[3]} {clean}\n{labels[2]}",
            ("\n\n", "\nNotes", "\nQuestion"),
        ),
        chat=f"{notes}\nQuestion: {clean}",
        style=style,
        language=language,
        home=home,
    )


def _prompt(
    shown: Sequence[Finding],
    *,
    answer: bool,
    completion: tuple[str, tuple[str, ...]],
    chat: str,
    style: PromptFormat,
    language: str,
    home: str,
) -> Prompt:
    """Instructions (and, for a base model, few-shot examples whose numbers no shown
    finding could cite) ahead of the request: ``completion`` is its text and stop
    strings for a base model, ``chat`` its text for a chat template."""
    ids = tuple(f.fact_id for f in shown)
    instructions = _instructions(language, home, answer)
    if style != "completion":
        return Prompt(instructions, chat, (), ids)
    table = _ANSWER_EXAMPLES if answer else _SUMMARY_EXAMPLES
    citable = [n for f in shown for n in f.numbers]
    examples = fill_examples(table.get(language, table["en"]), citable, language)
    return Prompt(instructions + examples, completion[0], completion[1], ids, _EXAMPLE_WORDS)


# --- titles and fallback text -----------------------------------------------------------


def cut(text: str, limit: int = TITLE_MAX) -> str:
    """``text`` within ``limit`` characters, cut at a word boundary with "…"."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    if " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:") + "…"


def summary_title(area_name: str | None, findings: Sequence[Finding], language: str = "en") -> str:
    """A readable one-line state: "Living room: 21.4 °C, CO2 701 ppm and rising"."""
    w = wording(language)
    notable = [f for f in findings if f.notable][:3]
    plain = [f for f in findings if not f.notable and f.kind in ("level", "state")]
    levels = plain[: max(0, 3 - len(notable))]
    parts = [f.headline for f in (*notable, *levels)]
    body = ", ".join(parts) if parts else w.quiet.lower()
    sep = " : " if language == "fr" else ": "
    title = f"{area_name}{sep}{body}" if area_name else body[:1].upper() + body[1:]
    return cut(title)


def fallback_text(findings: Sequence[Finding], language: str = "en", area: bool = False) -> str:
    """The summary code writes from the top findings when the model's is not published."""
    w = wording(language)
    shown = list(findings[:MAX_NOTES])
    if not shown:
        return f"{w.quiet}."
    sentences = [w.in_area(f.area_name, f.sentence) if area else f.sentence for f in shown]
    if not any(f.notable for f in shown):
        sentences.insert(0, f"{w.quiet}.")
    return " ".join(sentences)


_WORD = re.compile(r"[\w']+", re.UNICODE)
_YES_NO = {"en": ("Yes", "No"), "fr": ("Oui", "Non")}
_YES_NO_OPENERS = (
    "is ", "are ", "was ", "were ", "has ", "have ", "did ", "does ", "do ",
    "est-ce", "est ", "y a-t-il", "la ", "le ", "les ",
)  # fmt: skip


def question_words(question: str) -> set[str]:
    """The question's words, lower case."""
    return {w.lower() for w in _WORD.findall(question)}


def relevant(question: str, findings: Sequence[Finding], limit: int = 3) -> tuple[Finding, ...]:
    """The findings ``question`` is about (by area, device and metric words), best first;
    the top findings when it names none of them."""
    asked = question_words(question)
    scored = []
    for f in findings:
        words = set(f.words) | {w.lower() for w in _WORD.findall(f.area_name)}
        # An explained change carries its cause's vocabulary but no current state: the
        # state finding of the cause answers "is it occupied?".
        if f.vocabulary is not None and f.state is not None:
            for lang in f.vocabulary.words.values():
                words.update(x for x in (*lang.on, *lang.off) if " " not in x)
        hits = len(asked & words)
        if hits:
            scored.append((hits, f))
    if not scored:
        return tuple(findings[:limit])
    scored.sort(key=lambda p: (-p[0], -p[1].score))
    best = scored[0][0]
    return tuple(f for hits, f in scored if hits >= min(best, 2))[:limit]


def fallback_answer(question: str, findings: Sequence[Finding], language: str = "en") -> str:
    """An answer code writes from the relevant findings: "No, the front door is closed."."""
    w = wording(language)
    if not findings:
        return (
            "I have no readings about that yet."
            if language != "fr"
            else ("Je n'ai pas encore de mesure à ce sujet.")
        )
    first = findings[0]
    sentences = [w.in_area(f.area_name, f.sentence) if f.kind in ("level", "jump", "limit",
                 "usual", "excursion") else f.sentence for f in findings]  # fmt: skip
    verdict = yes_no(question, first, language)
    if verdict:
        sentences[0] = f"{verdict}, {sentences[0][:1].lower()}{sentences[0][1:]}"
    return cut(" ".join(sentences), 1000)


def yes_no(question: str, finding: Finding, language: str) -> str:
    """ "Yes"/"No" when ``question`` asks whether ``finding``'s state is a given state."""
    q = question.strip().lower()
    if finding.vocabulary is None or finding.state is None or not q.startswith(_YES_NO_OPENERS):
        return ""
    asked = question_words(question)
    words = finding.vocabulary.lang(language)
    yes, no = _YES_NO.get(language, _YES_NO["en"])
    if asked & set(words.current(finding.state)):
        return yes
    if asked & set(words.current(not finding.state)):
        return no
    return ""


# --- fact lines (the action prompt's readings) -----------------------------------------


def _num(value: float) -> str:
    """Short human rendering: no trailing zeros, at most two decimals."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _with_unit(value: float, unit: str | None) -> str:
    return f"{_num(value)} {unit}" if unit else _num(value)


def describe_fact(fact: MetricFacts) -> str:
    """One line a small model can read; every number in it is in the fact."""
    if fact.stale or fact.count == 0:
        return (
            f"- {fact.device} {fact.metric}: no new data, last {_with_unit(fact.last, fact.unit)}"
        )
    line = f"- {fact.device} {fact.metric}: now {_with_unit(fact.last, fact.unit)}"
    if fact.changes:
        line += f", changed {len(fact.changes)} times"
        return line
    if fact.count > 1:
        line += f", min {_num(fact.min)}, max {_num(fact.max)}"
    if fact.slope_per_h is not None and abs(fact.slope_per_h) >= 0.01:
        trend = "rising" if fact.slope_per_h > 0 else "falling"
        line += f", {trend} {_num(abs(fact.slope_per_h))} per hour"
    return line


def describe_anomaly(anomaly: Anomaly) -> str:
    """One line for the action prompt, built from the anomaly's own message."""
    return f"- alert: {anomaly.message}"


def narratable(facts: Iterable[MetricFacts]) -> tuple[MetricFacts, ...]:
    """Facts for the action prompt: everything but radio and housekeeping metrics."""
    return tuple(f for f in facts if f.metric not in DIAGNOSTIC_METRICS)


_MAX_MISSES = 8
"""Facts in a row that did not fit after which :func:`fit_facts` stops trying."""


def fit_facts(
    facts: Sequence[MetricFacts],
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    first: Iterable[str] = (),
) -> tuple[MetricFacts, ...]:
    """The most relevant facts whose lines fit in ``budget_tokens``.

    Relevance: facts named in ``first`` (e.g. the anomalous sensor), then stale or
    changing sensors, then the rest by most recent reading.
    """
    priority = set(first)
    ranked = sorted(
        facts,
        key=lambda f: (f.fact_id not in priority, not (f.stale or f.changes), -f.last_ts),
    )
    chosen, used, misses = [], 0, 0
    for fact in ranked:
        cost = count_tokens(describe_fact(fact) + "\n")
        if used + cost > budget_tokens:
            # A shorter line further down may still fit, but once several in a row did
            # not, the budget is spent: stop rather than tokenize every fact (1000 series
            # cost 28 ms of tokenizing on the event loop before this).
            misses += 1
            if misses >= _MAX_MISSES:
                break
            continue
        chosen.append(fact)
        used += cost
    return tuple(sorted(chosen, key=reading_order))


_LEAD_METRICS = ("temperature", "humidity")


def reading_order(fact: MetricFacts) -> tuple[str, int, str]:
    """Sort key for fact lines: by device, then temperature, humidity, the rest by name."""
    lead = _LEAD_METRICS.index(fact.metric) if fact.metric in _LEAD_METRICS else len(_LEAD_METRICS)
    return (fact.device, lead, fact.metric)
