"""Prompts from facts, titles, and the deterministic fallback text (pure code).

The prompt's shape follows the model folder's ``prompt_format``: ``chat`` models get
instructions and facts in one user turn; ``completion`` (base) models get a few-shot
completion that ends where the answer starts, and stop at a blank line. The static part
(instructions, home description, examples) comes first so the runtime can serve it
from its prefix KV cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from edge_agent.domain import Anomaly, MetricFacts

PROMPT_VERSION = "narrate-v4"
TITLE_MAX = 255  # Home Assistant caps a state at 255 characters.

PromptFormat = Literal["chat", "completion"]

# Radio and housekeeping readings: kept in the windows and the status, but a household
# summary about link quality or uptime is noise, and it costs prompt tokens.
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

# The examples are what a base model imitates. Without one for humidity, the 270M
# default wrote humidity in °C and called rooms "open" after the garage door; plain
# wording ("at 68 % humidity") measured better than adjectives ("humid", "mild").
# Their readings come in the order of _LEAD_METRICS, as a prompt's do (below).
_FEW_SHOT = (
    "Readings:\n- office temperature: now 22.4 °C, min 21.9, max 22.4, rising 0.5 per hour\n"
    "- office co2: now 640 ppm, min 610, max 660\n"
    "Summary: The office is at 22.4 °C and slowly warming; CO2 is fine at 640 ppm.\n\n"
    "Readings:\n- garage temperature: now 8.5 °C, min 8.1, max 9.0\n"
    "- garage door: now 1, changed 2 times\n"
    "Summary: The garage is cool at 8.5 °C and its door is open.\n\n"
    "Readings:\n- bathroom temperature: now 21.6 °C, min 20.9, max 21.8\n"
    "- bathroom humidity: now 68 %, min 52, max 71\n"
    "Summary: The bathroom is at 21.6 °C and 68 % humidity.\n\n"
)

# A device's readings are listed with these first, in this order, then the rest by
# name. A small model copies numbers best in the order its examples show. With the
# alphabetical order (co2, humidity, temperature) the 270M default misquoted the
# humidity of the demo's three-metric living room in 12 of 17 summaries, and with this
# order and the examples above in 2 of 17; `edge-agent bench narration` (seed 7)
# went from 85% to 94% grounded.
_LEAD_METRICS = ("temperature", "humidity")


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt split into its cacheable static prefix and the per-request rest."""

    static: str
    dynamic: str
    stop: tuple[str, ...] = ()
    fact_ids: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The whole user text (the model folder's template wraps it)."""
        return self.static + self.dynamic


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
        # A binary sensor's min 0 / max 1 says nothing its changes do not, and the
        # 270M default wrote those numbers into the next reading's temperature.
        line += f", changed {len(fact.changes)} times"
        return line
    if fact.count > 1:
        line += f", min {_num(fact.min)}, max {_num(fact.max)}"
    if fact.slope_per_h is not None and abs(fact.slope_per_h) >= 0.01:
        trend = "rising" if fact.slope_per_h > 0 else "falling"
        line += f", {trend} {_num(abs(fact.slope_per_h))} per hour"
    return line


def describe_anomaly(anomaly: Anomaly) -> str:
    """One line for the prompt and the fallback, built from the anomaly's own message."""
    return f"- alert: {anomaly.message}"


def narratable(facts: Iterable[MetricFacts]) -> tuple[MetricFacts, ...]:
    """The facts worth narrating: everything but radio and housekeeping metrics."""
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


def reading_order(fact: MetricFacts) -> tuple[str, int, str]:
    """Sort key for prompt lines: by device, then temperature, humidity, the rest by name."""
    lead = _LEAD_METRICS.index(fact.metric) if fact.metric in _LEAD_METRICS else len(_LEAD_METRICS)
    return (fact.device, lead, fact.metric)


def _instructions(language: str, home: str) -> str:
    lang = LANGUAGES.get(language, language)
    about = f" {home.strip()}" if home.strip() else ""
    return (
        f"You summarise home sensor readings for the people who live here.{about} "
        f"Write in {lang}, in one or two short sentences. Use only numbers from the "
        "readings; do not invent sensors.\n\n"
    )


def summary_prompt(
    facts: Sequence[MetricFacts],
    *,
    style: PromptFormat,
    language: str = "en",
    home: str = "",
    anomalies: Sequence[Anomaly] = (),
) -> Prompt:
    """The prompt asking for a summary of ``facts`` (and any anomalies)."""
    lines = [describe_fact(f) for f in facts] + [describe_anomaly(a) for a in anomalies]
    readings = "Readings:\n" + "\n".join(lines) + "\n"
    ids = tuple(f.fact_id for f in facts)
    if style == "completion":
        return Prompt(
            _instructions(language, home) + _FEW_SHOT,
            readings + "Summary:",
            ("\n\n", "\nReadings:"),
            ids,
        )
    return Prompt(_instructions(language, home), readings + "Summarise these readings.", (), ids)


def answer_prompt(
    question: str,
    facts: Sequence[MetricFacts],
    *,
    style: PromptFormat,
    language: str = "en",
    home: str = "",
) -> Prompt:
    """The prompt answering ``question`` from the current facts."""
    readings = "Readings:\n" + "\n".join(describe_fact(f) for f in facts) + "\n"
    ids = tuple(f.fact_id for f in facts)
    if style == "completion":
        return Prompt(
            _instructions(language, home) + _FEW_SHOT,
            f"{readings}Question: {question}\nAnswer:",
            ("\n\n", "\nReadings:"),
            ids,
        )
    return Prompt(_instructions(language, home), f"{readings}Question: {question}", (), ids)


def summary_title(facts: Sequence[MetricFacts], area: str | None = None) -> str:
    """A deterministic one-line state for dashboards, at most 255 characters."""
    parts = [f"{f.device} {f.metric} {_with_unit(f.last, f.unit)}" for f in facts]
    title = "; ".join(parts) if parts else "no readings"
    if area:
        title = f"{area}: {title}"
    if len(title) > TITLE_MAX:
        title = title[: TITLE_MAX - 1].rstrip() + "…"
    return title


def fallback_text(facts: Sequence[MetricFacts], anomalies: Sequence[Anomaly] = ()) -> str:
    """The summary code writes when the model's text fails the check or runs late."""
    sentences = [a.message.rstrip(".") + "." for a in anomalies]
    for fact in facts:
        if fact.stale or fact.count == 0:
            sentences.append(
                f"{fact.device} {fact.metric} has sent no new data "
                f"(last {_with_unit(fact.last, fact.unit)})."
            )
        elif fact.count == 1:
            sentences.append(f"{fact.device} {fact.metric} is {_with_unit(fact.last, fact.unit)}.")
        else:
            sentences.append(
                f"{fact.device} {fact.metric} is {_with_unit(fact.last, fact.unit)} "
                f"(min {_num(fact.min)}, max {_num(fact.max)})."
            )
    return " ".join(sentences) if sentences else "No readings in this window."
