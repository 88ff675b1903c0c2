"""Incremental detokenizing, stop-string scanning and streamed text deltas (pure)."""

from __future__ import annotations

from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

# Byte-level decoding of an unfinished UTF-8 character yields this until it completes.
_PARTIAL = "\ufffd"


class StopScanner:
    """Cuts text at the first stop string and streams only text that is final.

    A delta is emitted only once it can no longer turn out to be part of a stop string
    or of an unfinished character, so the streamed pieces always add up to a prefix
    of the returned text.
    """

    def __init__(self, stops: tuple[str, ...], sink: Callable[[str], None] | None) -> None:
        self._stops = tuple(s for s in stops if s)
        self._sink = sink
        self._sent = 0

    def update(self, text: str) -> tuple[str, bool]:
        """Feed the whole decoded text so far; returns (text cut at a stop, stopped)."""
        cuts = [i for s in self._stops if (i := text.find(s)) >= 0]
        if cuts:
            text = text[: min(cuts)]
            self._emit(text, len(text))
            return text, True
        self._emit(text, len(text) - self._held_back(text))
        return text, False

    def finish(self, text: str) -> None:
        """Flush what was held back once generation has ended without a stop."""
        self._emit(text, len(text))

    def _held_back(self, text: str) -> int:
        hold = len(text) - len(text.rstrip(_PARTIAL))
        body = text[: len(text) - hold]
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(body)), 0, -1):
                if body.endswith(stop[:k]):
                    hold = max(hold, len(text) - len(body) + k)
                    break
        return hold

    def _emit(self, text: str, upto: int) -> None:
        if self._sink is None or upto <= self._sent:
            return
        piece, self._sent = text[self._sent : upto], upto
        try:
            self._sink(piece)
        # A broken listener must not cost the generation; it is dropped, once, loudly.
        except Exception as exc:
            log.warning("text_sink_failed", error=repr(exc))
            self._sink = None


class IncrementalText:
    """The decoded text of a growing list of ids, decoding only its tail on each step.

    Decoding the whole list every token costs O(n) per step. Instead the text that is
    final (no unfinished character at its end) is kept, and each step decodes a short
    window: the last final token(s) as context plus the new ones, and keeps what the
    window adds beyond its context. The context makes tokenizers that treat a
    sequence's first token specially (SentencePiece's leading space) decode the same
    as they would inside the whole text.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._final = ""
        self._start = 0
        """Window start: ids from here to ``_read`` are context, already in ``_final``."""
        self._read = 0

    def text(self, ids: list[int]) -> str:
        """The text of ``ids``, the same list as last time with tokens appended."""
        context = self._decode(ids[self._start : self._read])
        window = self._decode(ids[self._start :])
        if not window.startswith(context):
            return self._decode(ids)  # a tokenizer this scheme does not fit
        if len(window) > len(context) and not window.endswith(_PARTIAL):
            self._final += window[len(context) :]
            self._start, self._read = self._read, len(ids)
            return self._final
        return self._final + window[len(context) :]
