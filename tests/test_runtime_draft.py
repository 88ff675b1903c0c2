"""Drafting with verification in the graph: greedy output identical to plain decoding.

The tiny model's folder is retargeted to score 4 positions per pass (the weights are
shared); the same folder then decodes with drafting off and on, and every observable
(text, token count, stop reason, streamed pieces, what the logits hook saw) must match.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import GenerationRequest, Sampling
from edge_agent.llm.draft import DraftConfig
from edge_agent.llm.manifest import Manifest
from edge_agent.llm.runtime import OnnxGenerator

pytestmark = pytest.mark.slow

PROMPTS = (
    "the cat sat on the mat and the cat sat on the",
    "Readings: kitchen temperature now 21.5 C, min 20.1, max 22.0. Summary: kitchen 21.5 C",
    "Summarise the kitchen temperature.",
    "a b c d e f a b c d e f a b",
)


@pytest.fixture(scope="module")
def pair(tiny_k4: Path) -> tuple[OnnxGenerator, OnnxGenerator]:
    """(plain, drafting) generators over the same K=4 folder.

    Plain decodes one token per pass; ``pairs`` makes its passes two rows long (the
    second unused), the kernel every verifying pass uses.
    """
    plain = OnnxGenerator.load(tiny_k4, draft=DraftConfig(enabled=False, pairs=True))
    drafting = OnnxGenerator.load(tiny_k4)
    assert (plain.draft_limit, drafting.draft_limit) == (0, 3)
    return plain, drafting


def _same(pair: tuple[OnnxGenerator, OnnxGenerator], **kw: object) -> tuple[int, int]:
    """Generate every prompt both ways; assert the same result; return drafted/accepted."""
    plain, drafting = pair
    drafted = accepted = 0
    for user in PROMPTS:
        request = GenerationRequest(plain.render(user), **kw)  # type: ignore[arg-type]
        want, got = plain.generate(request), drafting.generate(request)
        assert (got.text, got.new_tokens, got.stop_reason) == (
            want.text,
            want.new_tokens,
            want.stop_reason,
        ), user
        times = drafting.last_times
        assert times is not None
        drafted += times.drafted_tokens
        accepted += times.accepted_tokens
    return drafted, accepted


def test_the_manifest_records_the_verify_positions_and_old_folders_read_as_one(
    tiny_k4: Path, tiny_model: TinyModel
) -> None:
    assert Manifest.from_dir(tiny_k4).verify_positions == 4
    raw = json.loads((tiny_model.int4_dir / "manifest.json").read_text())
    raw.pop("verify_positions", None)
    raw.pop("kv_dtype", None)
    old = Manifest.from_json(json.dumps(raw))
    assert (old.verify_positions, old.kv_dtype) == (1, "float32")


def test_a_folder_without_verify_positions_decodes_without_drafting(
    tiny_model: TinyModel,
) -> None:
    generator = OnnxGenerator.load(tiny_model.int4_dir)
    assert generator.draft_limit == 0
    generator.generate(GenerationRequest(generator.render(PROMPTS[0]), 12))
    assert generator.last_times is not None
    assert generator.last_times.verify_steps == 0


def test_greedy_drafting_gives_identical_tokens_and_accepts_and_rejects(
    pair: tuple[OnnxGenerator, OnnxGenerator],
) -> None:
    drafted = accepted = 0
    for budget in (1, 2, 5, 17, 48):
        d, a = _same(pair, max_new_tokens=budget)
        drafted, accepted = drafted + d, accepted + a
    # Both paths of the verifier ran: some drafts kept, some rolled back.
    assert 0 < accepted < drafted


def test_the_logits_hook_sees_exactly_the_plain_sequence_of_states(
    pair: tuple[OnnxGenerator, OnnxGenerator],
) -> None:
    plain, drafting = pair

    def run(generator: OnnxGenerator) -> tuple[str, list[tuple[int, ...]]]:
        seen: list[tuple[int, ...]] = []

        def no_repeat(
            generated: Sequence[int], logits: npt.NDArray[np.float32]
        ) -> npt.NDArray[np.float32]:
            # Stateful constraint: never the same token twice in a row.
            seen.append(tuple(generated))
            if generated:
                logits[generated[-1]] = -np.inf
            return logits

        request = GenerationRequest(generator.render(PROMPTS[3]), 32, logits_processor=no_repeat)
        return generator.generate(request).text, seen

    want, got = run(plain), run(drafting)
    assert got == want
    # One call per generated token, each with one more token than the last.
    assert [len(s) for s in got[1]] == list(range(len(got[1])))


def test_streamed_pieces_stop_strings_and_deadline_match_plain_decoding(
    pair: tuple[OnnxGenerator, OnnxGenerator],
) -> None:
    plain, drafting = pair
    for user in PROMPTS:
        pieces: dict[str, list[str]] = {"plain": [], "draft": []}
        prompt = plain.render(user)
        a = plain.generate(GenerationRequest(prompt, 40, on_text=pieces["plain"].append))
        b = drafting.generate(GenerationRequest(prompt, 40, on_text=pieces["draft"].append))
        assert pieces["draft"] == pieces["plain"]
        assert "".join(pieces["draft"]) == b.text == a.text
        if len(a.text) > 4:
            stop = a.text[len(a.text) // 2 : len(a.text) // 2 + 2]
            _same(pair, max_new_tokens=40, stop=(stop,))
    d = drafting.generate(GenerationRequest(drafting.render(PROMPTS[0]), 40, deadline_s=0.0))
    assert (d.new_tokens, d.stop_reason) == (1, "deadline")


def test_the_prefix_cache_and_drafting_together_match_plain_decoding(
    pair: tuple[OnnxGenerator, OnnxGenerator],
) -> None:
    plain, drafting = pair
    head = "Sensor readings follow. Summarise them for the household in one sentence.\n"
    for tail in ("kitchen 21.5 C kitchen 21.5", "garage door open garage door", "kitchen 21.5 C"):
        prompt = plain.render(head + tail)
        cut = prompt.find(head) + len(head)
        want = plain.generate(GenerationRequest(prompt, 24))
        got = drafting.generate(GenerationRequest(prompt, 24, prefix_chars=cut))
        assert (got.text, got.new_tokens) == (want.text, want.new_tokens)
    assert drafting.reused_tokens_total > 0


def test_remembered_outputs_draft_a_repeated_narration_and_change_no_text(
    tiny_k4: Path,
) -> None:
    plain = OnnxGenerator.load(tiny_k4, draft=DraftConfig(enabled=False, pairs=True))
    forgetful = OnnxGenerator.load(tiny_k4, draft=DraftConfig(history_tokens=0))
    drafting = OnnxGenerator.load(tiny_k4)

    for user in PROMPTS:
        request = GenerationRequest(plain.render(user), 32)
        want = plain.generate(request).text
        first = drafting.generate(request)
        assert drafting.last_times is not None
        cold = drafting.last_times.accepted_tokens
        # The same narration again: the history has its every phrase, past the prompt's.
        again = drafting.generate(request)
        assert drafting.last_times is not None
        warm = drafting.last_times.accepted_tokens
        assert first.text == again.text == want == forgetful.generate(request).text
        assert warm >= cold
        if first.new_tokens >= 8:
            assert warm >= first.new_tokens // 2, (user, cold, warm)
    drafting.forget_drafts()
    assert drafting.generate(GenerationRequest(plain.render(PROMPTS[2]), 32)).text == (
        plain.generate(GenerationRequest(plain.render(PROMPTS[2]), 32)).text
    )


def test_sampling_decodes_without_drafts_and_as_before(
    pair: tuple[OnnxGenerator, OnnxGenerator],
) -> None:
    plain, drafting = pair
    sampling = Sampling(temperature=0.8, top_p=0.9, seed=3)
    request = GenerationRequest(plain.render(PROMPTS[0]), 24, sampling=sampling)
    assert drafting.generate(request).text == plain.generate(request).text
    assert drafting.last_times is not None
    assert drafting.last_times.verify_steps == 0
    # Greedy with a repetition penalty is still greedy: it drafts, identically.
    _same(pair, max_new_tokens=24, sampling=Sampling(repetition_penalty=1.3))


def test_the_plain_engine_drafts_identically_too(tiny_k4: Path) -> None:
    # session.run without IOBinding: rejected drafts are cut off the returned cache.
    plain = OnnxGenerator.load(tiny_k4, draft=DraftConfig(enabled=False, pairs=True))
    drafting = OnnxGenerator.load(tiny_k4, io_binding=False)
    for user in PROMPTS:
        request = GenerationRequest(plain.render(user), 32)
        assert drafting.generate(request).text == plain.generate(request).text
    assert drafting.last_times is not None


def test_a_pass_returns_one_row_per_fed_token_up_to_the_verify_positions(tiny_k4: Path) -> None:
    generator = OnnxGenerator.load(tiny_k4)
    engine = generator._engine  # the rows contract is the engine's
    ids = generator.encode(generator.render(PROMPTS[1]))
    engine.reserve(len(ids) + 8, keep=0)
    assert engine.forward_rows(ids, 0).shape[0] == 4  # a prefill: the last K rows
    for fed in (1, 2, 3, 4):
        assert engine.forward_rows(ids[:fed], len(ids)).shape[0] == fed


def test_the_retarget_cli_writes_a_verified_folder_with_fp16_kv(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    from tests.support.agent import run_cli

    out = tmp_path / "fp16"
    done = run_cli(
        "model", "retarget", str(tiny_model.int4_dir), "--out", str(out),
        "--verify-positions", "3", "--kv-dtype", "float16",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out)
    manifest = Manifest.from_dir(out)
    assert (manifest.verify_positions, manifest.kv_dtype) == (3, "float16")
    assert run_cli("model", "verify", str(out)).returncode == 0
    # The KV cache is float16 and drafting still reproduces two-row plain decoding.
    plain = OnnxGenerator.load(out, draft=DraftConfig(enabled=False, pairs=True))
    drafting = OnnxGenerator.load(out)
    assert drafting._layout.dtype == np.float16
    for user in PROMPTS:
        request = GenerationRequest(plain.render(user), 24)
        assert drafting.generate(request).text == plain.generate(request).text
    refused = run_cli("model", "retarget", str(out), "--out", str(tmp_path / "again"))
    assert refused.returncode == 1
    assert "float16 KV cache" in refused.stderr
