"""``tokenizer.json`` built from a GGUF vocabulary: SentencePiece-style BPE with byte fallback.

transformers 4.57 converts a Gemma GGUF vocabulary into a *Unigram* model scored by
the BPE ranks, which tokenizes English into roughly twice as many pieces as the model
was trained on. Gemma's SentencePiece model is BPE: the merge of two adjacent pieces
with the highest-scoring result wins. The same rule as a Hugging Face ``BPE`` model
is a merge list ordered by the merged piece's score, which is what is built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

from edge_agent.errors import ExportError
from edge_agent.export.gguf_file import GgufFile

# llama.cpp's token types (gguf.TokenType); only these three shape the tokenizer.
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4
SPACE = "▁"


@dataclass(frozen=True, slots=True)
class GgufVocab:
    """The tokenizer part of a GGUF file's metadata."""

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int
    model: str

    def id_of(self, token: str) -> int | None:
        """The id of ``token``, or ``None`` when the vocabulary lacks it."""
        try:
            return self.tokens.index(token)
        except ValueError:
            return None


def read_gguf_vocab(path: Path) -> GgufVocab:
    """Read tokens, scores and token types from a GGUF file (no tensors are loaded)."""
    return vocab_from_fields(GgufFile(path).fields, origin=str(path))


def vocab_from_fields(fields: dict[str, Any], *, origin: str) -> GgufVocab:
    """The vocabulary from parsed GGUF metadata; ``origin`` names the file in errors."""
    try:
        model = str(fields["tokenizer.ggml.model"])
        vocab = GgufVocab(
            tuple(fields["tokenizer.ggml.tokens"]),
            tuple(float(s) for s in fields["tokenizer.ggml.scores"]),
            tuple(int(t) for t in fields["tokenizer.ggml.token_type"]),
            bos_id=int(fields["tokenizer.ggml.bos_token_id"]),
            eos_id=int(fields["tokenizer.ggml.eos_token_id"]),
            unk_id=int(fields["tokenizer.ggml.unknown_token_id"]),
            pad_id=int(fields.get("tokenizer.ggml.padding_token_id", 0)),
            model=model,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportError(f"{origin} has no usable tokenizer metadata: {exc!r}") from exc
    if model != "llama":
        # "llama" is llama.cpp's name for a SentencePiece model; others (gpt2 BPE with
        # merges, wordpiece) need a different builder.
        raise ExportError(f"{origin}: tokenizer model {model!r} is not SentencePiece ('llama')")
    return vocab


def spm_merges(vocab: GgufVocab) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score rule, highest merged score first.

    Every normal piece that splits into two normal pieces yields a merge; ties between
    splits of one piece are broken by the ids of the halves, as SentencePiece's
    extractor in transformers does.
    """
    ids = {tok: i for i, tok in enumerate(vocab.tokens) if vocab.types[i] == NORMAL}
    ranked: list[tuple[float, int, int, str, str]] = []
    for piece, piece_id in ids.items():
        score = vocab.scores[piece_id]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            left_id, right_id = ids.get(left), ids.get(right)
            if left_id is not None and right_id is not None:
                ranked.append((-score, left_id, right_id, left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def build_gguf_tokenizer(vocab: GgufVocab) -> Tokenizer:
    """A ``tokenizers`` BPE equivalent to llama.cpp's SentencePiece tokenizer for ``vocab``.

    Spaces become ``▁`` in the normalizer and there is no pre-tokenizer split, so merges
    may cross words exactly as SentencePiece allows. No BOS is added: the manifest's
    prompt template carries ``<bos>``.
    """
    table = {tok: i for i, tok in enumerate(vocab.tokens)}
    if len(table) != len(vocab.tokens):
        raise ExportError("the GGUF vocabulary has duplicate tokens")
    bpe = models.BPE(
        vocab=table,
        merges=spm_merges(vocab),
        unk_token=vocab.tokens[vocab.unk_id],
        byte_fallback=True,
        fuse_unk=True,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    # Control tokens (<bos>, <start_of_turn>, ...) are matched in text so templates can
    # spell them; user-defined ones (newline and space runs, HTML tags) are atomic, as
    # in llama.cpp, and matched on the raw text before spaces become ▁.
    added = [
        AddedToken(tok, special=vocab.types[i] == CONTROL, normalized=False)
        for i, tok in enumerate(vocab.tokens)
        if vocab.types[i] in (CONTROL, USER_DEFINED)
    ]
    tokenizer.add_tokens(added)
    return tokenizer
