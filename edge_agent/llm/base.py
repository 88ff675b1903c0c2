"""The small interface between the service and any text generator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: a finished prompt string plus decoding limits."""

    prompt: str
    max_new_tokens: int = 96
    deadline_s: float | None = None
    """Wall-clock budget in seconds from the start of generation; None means no limit."""


@dataclass(frozen=True, slots=True)
class Generation:
    """The outcome of one generation."""

    text: str
    prompt_tokens: int
    new_tokens: int
    stop_reason: str
    """One of ``eos``, ``stop``, ``max_new_tokens``, ``deadline``."""
    latency_s: float


class Generator(Protocol):
    """Turns a prompt into text. Implementations are not thread-safe: one call at a time."""

    @property
    def model_id(self) -> str:
        """A stable id of the loaded model, published with every summary."""
        ...

    def render(self, user: str) -> str:
        """Wrap ``user`` text in the model folder's prompt template."""
        ...

    def generate(self, request: GenerationRequest) -> Generation:
        """Generate greedily (or as configured) until a stop condition."""
        ...
