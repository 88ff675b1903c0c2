"""The bytes each token of a tokenizer writes: the alphabet of constrained decoding.

Two vocabularies cover the models we ship: byte-level BPE (GPT-2 style, the tiny test
model) and SentencePiece-style pieces with ``▁`` for a space and ``<0xNN>`` byte
fallback (Gemma). Added tokens (``<eos>``, ``<start_of_turn>``...) write no text and
are never allowed under a constraint; end-of-sequence is handled apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.errors import ModelError

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte -> printable character table, inverted."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _has_type(node: Any, name: str) -> bool:
    if isinstance(node, dict):
        return node.get("type") == name or any(_has_type(v, name) for v in node.values())
    if isinstance(node, list):
        return any(_has_type(v, name) for v in node)
    return False


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Per token id, its bytes (None: never allowed), plus the end-of-sequence ids."""

    tokens: tuple[bytes | None, ...]
    eos_ids: frozenset[int]

    @classmethod
    def from_pieces(
        cls, pieces: Sequence[str | None], *, byte_level: bool, eos_ids: Iterable[int]
    ) -> TokenTable:
        """From vocabulary strings as the tokenizer stores them."""
        tokens: list[bytes | None] = []
        inverse = _byte_level_decoder() if byte_level else {}
        for piece in pieces:
            if not piece:
                tokens.append(None)
            elif byte_level:
                try:
                    tokens.append(bytes(inverse[c] for c in piece))
                except KeyError:
                    tokens.append(None)
            elif m := _BYTE_PIECE.match(piece):
                tokens.append(bytes((int(m.group(1), 16),)))
            else:
                tokens.append(piece.replace("▁", " ").encode("utf-8"))
        return cls(tuple(tokens), frozenset(eos_ids))

    @classmethod
    def from_tokenizer_json(cls, path: Path, eos_ids: Iterable[int]) -> TokenTable:
        """Read a Hugging Face ``tokenizer.json`` (BPE or Unigram models)."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            model = doc["model"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot read the vocabulary of {path}: {exc}") from exc
        vocab = model.get("vocab")
        if isinstance(vocab, dict):
            by_id = {int(i): str(p) for p, i in vocab.items()}
        elif isinstance(vocab, list):
            by_id = {i: str(entry[0]) for i, entry in enumerate(vocab)}
        else:
            raise ModelError(f"{path}: unsupported tokenizer model {model.get('type')!r}")
        added = {int(t["id"]) for t in doc.get("added_tokens") or ()}
        size = max([*by_id, *added, -1]) + 1
        pieces = [None if i in added else by_id.get(i) for i in range(size)]
        byte_level = _has_type(doc.get("decoder"), "ByteLevel") or _has_type(
            doc.get("pre_tokenizer"), "ByteLevel"
        )
        return cls.from_pieces(pieces, byte_level=byte_level, eos_ids=eos_ids)


@dataclass(frozen=True, slots=True)
class TokenArrays:
    """The table packed for numpy: one flat byte array, grouped by first byte."""

    flat: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    by_first: npt.NDArray[np.int32]
    """Ids of usable tokens sorted by first byte; ``starts[b]:starts[b+1]`` slices it."""
    starts: npt.NDArray[np.int64]
    size: int
    eos: npt.NDArray[np.int32]

    @classmethod
    def pack(cls, table: TokenTable) -> TokenArrays:
        """Pack ``table``; empty and excluded tokens get length 0 and are never offered."""
        lengths = np.array([len(t) if t else 0 for t in table.tokens], dtype=np.int64)
        flat = np.frombuffer(b"".join(t for t in table.tokens if t), dtype=np.uint8)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        offsets[1:] = np.cumsum(lengths)[:-1]
        usable = np.flatnonzero(lengths > 0).astype(np.int32)
        first = flat[offsets[usable]]
        order = np.argsort(first, kind="stable")
        by_first = usable[order]
        starts = np.searchsorted(first[order], np.arange(257)).astype(np.int64)
        eos = np.array(sorted(table.eos_ids), dtype=np.int32)
        return cls(flat, offsets, lengths, by_first, starts, len(lengths), eos)
