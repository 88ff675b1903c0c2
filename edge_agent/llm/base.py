"""The small interface between the service and any text generator."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt


class LogitsProcessor(Protocol):
    """A hook that may change the next-token scores, e.g. to constrain output to JSON.

    Called once per generated token, on the generating thread, with the token ids
    generated so far and the float32 logits of the next token (shape ``[vocab]``). It
    returns the logits to pick from (it may modify them in place and return them).
    Masking a token means setting its logit to ``-inf``.
    """

    def __call__(
        self, generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """Return the (possibly masked) logits of the next token."""
        ...


@dataclass(frozen=True, slots=True)
class Sampling:
    """How the next token is picked; the default is greedy."""

    temperature: float = 0.0
    """0 means greedy (argmax)."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 keeps all."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches p."""
    repetition_penalty: float = 1.0
    """Above 1 discourages tokens already in the prompt or the output."""
    seed: int | None = None
    """Seed of the sampler, for reproducible sampling."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: a finished prompt string plus decoding limits."""

    prompt: str
    max_new_tokens: int = 96
    deadline_s: float | None = None
    """Wall-clock budget in seconds from the start of generation; None means no limit."""
    stop: tuple[str, ...] = ()
    """Extra plain-text stop strings for this request, on top of the model folder's."""
    prefix_chars: int = 0
    """Length of the prompt's static head (template + instructions). The runtime may keep
    the KV cache of that head and prefill only the rest on the next request."""
    on_text: Callable[[str], None] | None = field(default=None, compare=False)
    """Called with each new piece of text as it is generated, on the generating thread."""
    sampling: Sampling = field(default_factory=Sampling)
    logits_processor: LogitsProcessor | None = field(default=None, compare=False)
    """Applied to every step's logits before sampling (constrained decoding)."""
    json_schema: Mapping[str, Any] | None = field(default=None, compare=False)
    """The JSON schema the output must match, for generators that constrain on a server
    (``response_format``) rather than through ``logits_processor``; others ignore it."""
    cancelled: Callable[[], bool] | None = field(default=None, compare=False)
    """Polled between tokens; once it returns True the generation ends early with
    stop_reason ``cancelled`` (the service is shutting down)."""


@dataclass(frozen=True, slots=True)
class Generation:
    """The outcome of one generation."""

    text: str
    prompt_tokens: int
    new_tokens: int
    stop_reason: str
    """One of ``eos``, ``stop``, ``max_new_tokens``, ``deadline``, ``cancelled``."""
    latency_s: float


class Generator(Protocol):
    """Turns a prompt into text. Implementations are not thread-safe: one call at a time."""

    @property
    def model_id(self) -> str:
        """A stable id of the loaded model, published with every summary."""
        ...

    @property
    def prompt_format(self) -> Literal["chat", "completion"]:
        """How the folder's model wants prompts: a chat turn, or a few-shot completion."""
        ...

    @property
    def context_length(self) -> int:
        """Most tokens (prompt and generated) one request may hold."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes, without special tokens."""
        ...

    def render(self, user: str) -> str:
        """Wrap ``user`` text in the model folder's prompt template."""
        ...

    def generate(self, request: GenerationRequest) -> Generation:
        """Generate greedily (or as configured) until a stop condition."""
        ...
