"""The fact lines of the action prompt; the narration prompts live in ``prompts.py``.

Kept so ``actions/prompt.py`` imports keep working while it is edited on another
branch; new code imports from :mod:`edge_agent.prompts`.
"""

from __future__ import annotations

from edge_agent.prompts import (
    Prompt,
    PromptFormat,
    describe_anomaly,
    describe_fact,
    fit_facts,
    narratable,
    reading_order,
)

__all__ = [
    "Prompt",
    "PromptFormat",
    "describe_anomaly",
    "describe_fact",
    "fit_facts",
    "narratable",
    "reading_order",
]
