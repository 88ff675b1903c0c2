"""Prompts from facts, and the deterministic parts of a summary (pure code)."""

from __future__ import annotations

from edge_agent.domain import MetricFacts

PROMPT_VERSION = "summary-v1"
TITLE_MAX = 255  # Home Assistant caps a state at 255 characters.


def _num(value: float) -> str:
    """Short human rendering: no trailing zeros, at most two decimals."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _with_unit(value: float, unit: str | None) -> str:
    return f"{_num(value)} {unit}" if unit else _num(value)


def describe_fact(fact: MetricFacts) -> str:
    """One line a small model can read: last, range, mean and count of one metric."""
    return (
        f"- {fact.device} {fact.metric}: now {_with_unit(fact.last, fact.unit)}, "
        f"min {_num(fact.min)}, max {_num(fact.max)}, mean {_num(fact.mean)} "
        f"({fact.count} readings)"
    )


def summary_prompt(facts: tuple[MetricFacts, ...], window_s: float) -> str:
    """The user message asking for a summary of ``facts``; the template wraps it."""
    minutes = _num(window_s / 60)
    lines = "\n".join(describe_fact(f) for f in facts)
    return (
        f"Sensor readings from the last {minutes} minutes:\n{lines}\n"
        "Summarise them for the household in two short sentences. "
        "Use only the numbers above."
    )


def summary_title(facts: tuple[MetricFacts, ...]) -> str:
    """A deterministic one-line state for dashboards, at most 255 characters."""
    parts = [f"{f.device} {f.metric} {_with_unit(f.last, f.unit)}" for f in facts]
    title = "; ".join(parts) if parts else "no readings"
    if len(title) > TITLE_MAX:
        title = title[: TITLE_MAX - 1].rstrip() + "…"
    return title
