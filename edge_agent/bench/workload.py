"""The benchmark's prompts as token ids and text, identical for every engine (pure)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

# Sensor-log prose, like the service's real prompts; repeated until long enough.
_FILLER = (
    "The kitchen temperature rose from 20.5 C to 23.1 C between 07:10 and 07:40 while the "
    "oven was on. Humidity in the bathroom peaked at 78 percent after the shower and fell "
    "back to 55 percent within twenty minutes. The hallway motion sensor reported movement "
    "four times, the front door opened at 08:15, and power use reached 2400 watts. "
)


@dataclass(frozen=True, slots=True)
class Workload:
    """What every engine is asked to do, in token ids (and the text our runtime takes)."""

    prompt_ids: list[int]
    prompt_text: str
    prefix_ids: list[int]
    """The cached-prefix test: a long static head ..."""
    prefix_text: str
    suffix_ids: list[int]
    """... and the per-request tail after it."""
    suffix_text: str
    new_tokens: int
    runs: int

    def to_file(self, path: Path) -> None:
        """Write as JSON for a benchmark child process."""
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def from_file(cls, path: Path) -> Workload:
        """Read what ``to_file`` wrote."""
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(**raw)


def text_of_tokens(
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    n: int,
    offset: int = 0,
) -> tuple[list[int], str]:
    """Text that encodes to (about) ``n`` tokens, and exactly the ids it encodes to.

    The ids are cut at ``n`` and decoded; re-encoding may merge differently at the cut,
    so the returned ids are always ``encode(text)``, which every engine then gets.
    """
    filler = _FILLER[offset % len(_FILLER) :] + _FILLER
    text = filler
    while len(encode(text)) < n + 8:
        text += filler
    cut = decode(encode(text)[:n])
    return encode(cut), cut


def build(
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    *,
    prompt_tokens: int,
    new_tokens: int,
    prefix_tokens: int,
    suffix_tokens: int,
    runs: int,
) -> Workload:
    """The workload for one ``edge-agent bench`` invocation."""
    prompt_ids, prompt_text = text_of_tokens(encode, decode, prompt_tokens)
    _, prefix_text = text_of_tokens(encode, decode, prefix_tokens, offset=7)
    _, suffix_text = text_of_tokens(encode, decode, suffix_tokens, offset=61)
    suffix_text = " " + suffix_text.lstrip()
    # The engines see the ids of the joined text; the split is where the head ends.
    joined = encode(prefix_text + suffix_text)
    head = len(encode(prefix_text))
    return Workload(
        prompt_ids=prompt_ids,
        prompt_text=prompt_text,
        prefix_ids=joined[:head],
        prefix_text=prefix_text,
        suffix_ids=joined[head:],
        suffix_text=suffix_text,
        new_tokens=new_tokens,
        runs=runs,
    )
