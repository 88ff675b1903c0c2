"""Picking the next token from logits: repetition penalty, hook, greedy or seeded sampling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.errors import GenerationError
from edge_agent.llm.base import LogitsProcessor, Sampling

# Top-p first looks at this many best tokens; only if they hold less than p of the
# mass does it sort the whole vocabulary (256k entries for Gemma, ~10 ms per token).
_TOP_P_SHORTLIST = 1024


def check(sampling: Sampling) -> None:
    """Raise ``GenerationError`` for settings no sampler can honour."""
    if not sampling.temperature >= 0.0:
        raise GenerationError(f"temperature must be >= 0, not {sampling.temperature}")
    if sampling.top_k < 0:
        raise GenerationError(f"top_k must be >= 0, not {sampling.top_k}")
    if not 0.0 < sampling.top_p <= 1.0:
        raise GenerationError(f"top_p must be in (0, 1], not {sampling.top_p}")
    if not sampling.repetition_penalty > 0.0:
        raise GenerationError(f"repetition_penalty must be > 0, not {sampling.repetition_penalty}")


class TokenPicker:
    """Turns one step's logits into the next token id; one instance per request.

    The order matches Hugging Face's: repetition penalty, then the caller's logits
    processor (so a mask it sets is final), then temperature, top-k and top-p.
    """

    def __init__(
        self,
        sampling: Sampling,
        prompt: Sequence[int],
        processor: LogitsProcessor | None = None,
    ) -> None:
        check(sampling)
        self._sampling = sampling
        self._processor = processor
        self._rng = np.random.default_rng(sampling.seed)
        self._generated: list[int] = []
        penalised = sampling.repetition_penalty != 1.0
        # Ids seen so far, as an index array so the penalty is one vectorised step.
        self._seen: npt.NDArray[np.int64] = (
            np.unique(np.asarray(prompt, dtype=np.int64)) if penalised else np.empty(0, np.int64)
        )

    @property
    def generated(self) -> list[int]:
        """Token ids picked so far (the caller appends nothing itself)."""
        return self._generated

    def pick(self, logits: npt.NDArray[np.float32]) -> int:
        """Choose the next token; ``logits`` (shape ``[vocab]``) is scratch, edited in place.

        The engine's row is overwritten by its next step anyway; a copy would cost a
        fresh megabyte (Gemma's 256k vocabulary) and its page faults on every token.
        """
        s = self._sampling
        if s.repetition_penalty != 1.0 and self._seen.size:
            scores = logits[self._seen]
            logits[self._seen] = np.where(
                scores > 0, scores / s.repetition_penalty, scores * s.repetition_penalty
            )
        if self._processor is not None:
            logits = self._processor(self._generated, logits)
        if s.temperature == 0.0 or s.top_k == 1:
            token = int(np.argmax(logits))
            if not np.isfinite(logits[token]):
                raise GenerationError("the logits processor masked every token")
        else:
            token = self._sample(logits)
        self._generated.append(token)
        if s.repetition_penalty != 1.0 and token not in self._seen:
            self._seen = np.append(self._seen, token)
        return token

    def _sample(self, logits: npt.NDArray[np.float32]) -> int:
        s = self._sampling
        vocab = logits.shape[-1]
        if 0 < s.top_k < vocab:
            ids = np.argpartition(logits, -s.top_k)[-s.top_k :]
        elif s.top_p < 1.0 and vocab > _TOP_P_SHORTLIST:
            ids = np.argpartition(logits, -_TOP_P_SHORTLIST)[-_TOP_P_SHORTLIST:]
        else:
            ids = np.arange(vocab)
        probs = _softmax(logits[ids].astype(np.float64) / s.temperature)
        if s.top_p < 1.0:
            if len(ids) < vocab and s.top_k == 0 and _mass(logits, ids, s.temperature) < s.top_p:
                # The shortlist holds too little mass to decide top-p: use everything.
                ids = np.arange(vocab)
                probs = _softmax(logits.astype(np.float64) / s.temperature)
            order = np.argsort(-probs, kind="stable")
            ids, probs = ids[order], probs[order]
            keep = int(np.searchsorted(np.cumsum(probs), s.top_p)) + 1
            ids, probs = ids[:keep], probs[:keep] / probs[:keep].sum()
        if not np.all(np.isfinite(probs)) or probs.sum() <= 0:
            raise GenerationError("the logits processor masked every token")
        cumulative = np.cumsum(probs)
        index = int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], "right"))
        return int(ids[min(index, len(ids) - 1)])


def _softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    top = np.max(x)
    if not np.isfinite(top):
        return np.full_like(x, np.nan)
    e = np.exp(x - top)
    result: npt.NDArray[np.float64] = e / e.sum()
    return result


def _mass(logits: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], temperature: float) -> float:
    """Share of the softmax mass that ``ids`` hold."""
    scaled = logits.astype(np.float64) / temperature
    top = np.max(scaled)
    total = np.exp(scaled - top).sum()
    return float(np.exp(scaled[ids] - top).sum() / total)
