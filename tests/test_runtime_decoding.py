"""Decoding controls: seeded sampling, top-k/top-p, repetition penalty, logits hook, streaming."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from tokenizers import Tokenizer, decoders, models

from edge_agent.errors import GenerationError
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import GenerationRequest, Sampling
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.llm.sampling import TokenPicker, check
from edge_agent.llm.session import KvLayout, open_session

PROMPT_USER = "The living room is warm and the humidity is 45 percent."


class ForceSequence:
    """A logits processor that allows exactly one token per step, then eos."""

    def __init__(self, tokens: list[int], eos: int) -> None:
        self.tokens = tokens
        self.eos = eos
        self.seen: list[list[int]] = []

    def __call__(
        self, generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        self.seen.append(list(generated))
        step = len(generated)
        keep = self.tokens[step] if step < len(self.tokens) else self.eos
        masked = np.full_like(logits, -np.inf)
        masked[keep] = 0.0
        return masked


# --- the picker on synthetic logits (pure) ---------------------------------------------


def _logits(seed: int = 0, vocab: int = 50) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).normal(0, 2, vocab).astype(np.float32)


def _draws(sampling: Sampling, n: int = 40) -> list[int]:
    picker = TokenPicker(sampling, prompt=[1, 2, 3])
    return [picker.pick(_logits()) for _ in range(n)]


def test_sampling_is_reproducible_with_a_seed_and_differs_across_seeds() -> None:
    a = _draws(Sampling(temperature=1.0, seed=7))
    assert a == _draws(Sampling(temperature=1.0, seed=7))
    assert a != _draws(Sampling(temperature=1.0, seed=8))
    assert len(set(a)) > 3, "temperature 1 over flat-ish logits should vary"


def test_top_k_one_and_temperature_zero_are_greedy() -> None:
    best = int(np.argmax(_logits()))
    assert set(_draws(Sampling(temperature=1.5, top_k=1, seed=1))) == {best}
    assert set(_draws(Sampling(temperature=0.0, seed=1))) == {best}


def test_top_k_and_top_p_restrict_the_candidates() -> None:
    logits = _logits()
    top3 = set(np.argsort(-logits)[:3].tolist())
    assert set(_draws(Sampling(temperature=5.0, top_k=3, seed=2), 200)) <= top3
    # A tiny p keeps only the most likely token, even at a high temperature.
    assert set(_draws(Sampling(temperature=5.0, top_p=1e-6, seed=2))) == {int(np.argmax(logits))}


def test_top_p_on_a_large_vocabulary_uses_the_shortlist_or_falls_back() -> None:
    flat = np.zeros(5000, dtype=np.float32)
    picker = TokenPicker(Sampling(temperature=1.0, top_p=0.9, seed=3), prompt=[])
    # Flat logits: a 1024-token shortlist holds ~20% of the mass, so all 5000 compete.
    picks = {picker.pick(flat) for _ in range(300)}
    assert max(picks) >= 1024 or len(picks) > 250


def test_repetition_penalty_pushes_seen_tokens_down() -> None:
    logits = np.array([3.0, 2.9, -1.0, -1.1], dtype=np.float32)
    picker = TokenPicker(Sampling(repetition_penalty=1.5), prompt=[0])
    # pick edits its input in place (the engine's row is scratch): give it fresh rows.
    assert picker.pick(logits.copy()) == 1  # 3.0 / 1.5 = 2.0 < 2.9
    assert picker.pick(logits.copy()) == 0  # now 1 is seen too: 2.9 / 1.5 < 2.0
    negative = TokenPicker(Sampling(repetition_penalty=2.0), prompt=[2])
    assert negative.pick(np.array([-5.0, -5.0, -1.0, -1.1], dtype=np.float32)) == 3


def test_a_processor_that_masks_everything_is_an_error() -> None:
    def mask_all(
        generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        return np.full_like(logits, -np.inf)

    for sampling in (Sampling(), Sampling(temperature=1.0, seed=1)):
        with pytest.raises(GenerationError, match="masked every token"):
            TokenPicker(sampling, [], mask_all).pick(_logits())


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        (Sampling(temperature=-1.0), "temperature"),
        (Sampling(top_k=-1), "top_k"),
        (Sampling(top_p=0.0), "top_p"),
        (Sampling(top_p=1.5), "top_p"),
        (Sampling(repetition_penalty=0.0), "repetition_penalty"),
    ],
)
def test_impossible_settings_are_refused(sampling: Sampling, field: str) -> None:
    with pytest.raises(GenerationError, match=field):
        check(sampling)


# --- through the real tiny model ---------------------------------------------------------


@pytest.fixture(scope="module")
def generator(tiny_model: TinyModel) -> OnnxGenerator:
    """The int4 device folder, loaded once for this module."""
    return OnnxGenerator.load(tiny_model.int4_dir, threads=2)


def _request(generator: OnnxGenerator, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(generator.render(PROMPT_USER), max_new_tokens=24, **kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_seeded_sampling_reproduces_and_seeds_differ(generator: OnnxGenerator) -> None:
    def sample(seed: int) -> str:
        sampling = Sampling(temperature=1.0, top_p=0.95, seed=seed)
        return generator.generate(_request(generator, sampling=sampling)).text

    assert sample(11) == sample(11)
    assert len({sample(s) for s in range(5)}) >= 3


@pytest.mark.slow
def test_top_k_one_sampling_equals_greedy(generator: OnnxGenerator) -> None:
    greedy = generator.generate(_request(generator))
    top1 = generator.generate(_request(generator, sampling=Sampling(temperature=0.8, top_k=1)))
    assert (top1.text, top1.new_tokens) == (greedy.text, greedy.new_tokens)


@pytest.mark.slow
def test_repetition_penalty_changes_the_output(generator: OnnxGenerator) -> None:
    def distinct_share(text: str) -> float:
        ids = generator.encode(text)
        return len(set(ids)) / max(len(ids), 1)

    greedy = generator.generate(_request(generator))
    penalised = generator.generate(_request(generator, sampling=Sampling(repetition_penalty=1.8)))
    assert penalised.text != greedy.text
    # The tiny random model loops on a few tokens; the penalty must break that up.
    assert distinct_share(penalised.text) > distinct_share(greedy.text)


@pytest.mark.slow
def test_a_logits_processor_can_force_an_exact_sequence(generator: OnnxGenerator) -> None:
    target = generator.encode("température 21°C ✓ ok")
    eos = generator.manifest.eos_token_ids[0]
    force = ForceSequence(target, eos)
    pieces: list[str] = []
    result = generator.generate(_request(generator, logits_processor=force, on_text=pieces.append))
    assert result.text == "température 21°C ✓ ok" == generator.decode(target)
    assert (result.new_tokens, result.stop_reason) == (len(target), "eos")
    # Called once per step with exactly the tokens generated so far.
    assert force.seen == [target[:i] for i in range(len(target) + 1)]
    # Multi-byte characters span several byte tokens; no half character is streamed.
    assert "".join(pieces) == result.text
    assert not any("\ufffd" in p for p in pieces)
    assert len(pieces) > 3


def _sentencepiece_tokenizer() -> Tokenizer:
    """A Gemma-style decoder: ▁ for spaces, <0xNN> byte-fallback pieces, leading space strip."""
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>"])}
    vocab |= {f"<0x{b:02X}>": 4 + b for b in range(256)}
    for word in ("▁temp", "▁ok", "rature", "▁21", "°"):
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return tokenizer


@pytest.mark.slow
def test_streaming_is_exact_over_sentencepiece_byte_fallback(tiny_model: TinyModel) -> None:
    base = OnnxGenerator.load(tiny_model.int4_dir)
    session = open_session(
        tiny_model.int4_dir / "model.onnx", threads=2, provider="CPUExecutionProvider"
    )
    layout = KvLayout.from_session(session, base.manifest)
    tokenizer = _sentencepiece_tokenizer()
    generator = OnnxGenerator(session, tokenizer, base.manifest, layout)
    v = tokenizer.get_vocab()
    # "temp" "é" (2 bytes) "rature" " 21" "°" " ok" "✓" (3 bytes): pieces split characters.
    ids = [v["▁temp"], 4 + 0xC3, 4 + 0xA9, v["rature"], v["▁21"], v["°"], v["▁ok"]]
    ids += [4 + 0xE2, 4 + 0x9C, 4 + 0x93]
    pieces: list[str] = []
    request = GenerationRequest(
        "<bos>hi", max_new_tokens=20, logits_processor=ForceSequence(ids, 1), on_text=pieces.append
    )
    result = generator.generate(request)
    assert result.text == "température 21° ok✓" == tokenizer.decode(ids)
    assert "".join(pieces) == result.text
    assert not any("\ufffd" in p for p in pieces)


@pytest.mark.slow
def test_streaming_matches_the_returned_text_when_sampling(generator: OnnxGenerator) -> None:
    for seed in range(3):
        sampling = Sampling(temperature=1.2, seed=seed)
        pieces: list[str] = []
        streamed = generator.generate(_request(generator, sampling=sampling, on_text=pieces.append))
        plain = generator.generate(_request(generator, sampling=sampling))
        assert "".join(pieces) == streamed.text == plain.text


@pytest.mark.slow
def test_the_deadline_stops_a_slow_generation(generator: OnnxGenerator) -> None:
    def slow(generated: Sequence[int], logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        time.sleep(0.05)
        return logits

    request = _request(generator, logits_processor=slow, deadline_s=0.3)
    result = generator.generate(request)
    assert result.stop_reason == "deadline"
    assert 1 <= result.new_tokens < 24
