"""The prepared Gemma 3 270M default model: fluent, faithful to its float export, cached."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from edge_agent.bench.narration import DEFAULT_DATA, bench_narration
from edge_agent.export.gemma3 import Prepared
from edge_agent.export.quality import DEFAULT_TEXT, compare
from edge_agent.llm.manifest import verify
from tests.support.agent import run_cli
from tests.support.models import OnnxHarness, gemma3_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
# Greedy continuation measured on the fp32 export: " the capital of the country of France."
FP32_CONTINUATION = [506, 5279, 529, 506, 2891, 529, 7001, 236761]
MATCHED_PREFIX = 4
# Measured 0.9323 top-1 agreement and 0.0136 mean KL over 2,099 tokens (fused graph, int8
# blocks, int4 head with its first 32,768 rows at int8, calibrated rounding, shared with
# the embedding). Pinned a little below so a different CPU's kernels cannot flake it.
MIN_TOP1 = 0.925
MAX_MEAN_KL = 0.016
# `bench narration` on the default (prompt narrate-v5, see docs/narration.md): the bars of
# issue 20, pinned at them, so a prompt or quantization change that costs users true
# text or the model's own words fails here.
MIN_MODEL_SHARE = 0.70
MIN_RECALL = 0.80


def _greedy(folder: Path, n: int) -> list[int]:
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tok.encode("<bos>" + PROMPT, add_special_tokens=False).ids
    assert ids == [2, 818, 5279, 529, 7001, 563]
    return OnnxHarness(folder).greedy_without_cache(ids, n, {1, 106})[0]


def test_fp32_export_continues_the_prompt_fluently(gemma3_model: Prepared) -> None:  # noqa: F811
    assert gemma3_model.fp32_dir is not None
    assert _greedy(gemma3_model.fp32_dir, len(FP32_CONTINUATION)) == FP32_CONTINUATION


def test_quantized_model_matches_the_fp32_continuation(gemma3_model: Prepared) -> None:  # noqa: F811
    new = _greedy(gemma3_model.int4_dir, MATCHED_PREFIX)
    assert new == FP32_CONTINUATION[:MATCHED_PREFIX]


def test_manifest_prompts_a_base_model(gemma3_model: Prepared) -> None:  # noqa: F811
    manifest = verify(gemma3_model.int4_dir)
    assert manifest.family == "gemma3"
    assert manifest.prompt_format == "completion"
    assert manifest.render("Hi") == "<bos>Hi"
    assert manifest.stop_strings == ("\n\n",)
    assert set(manifest.eos_token_ids) == {1, 106}
    assert manifest.quantization.shared_embedding
    assert (manifest.num_layers, manifest.num_kv_heads, manifest.head_dim) == (18, 1, 256)


def test_runtime_stops_a_base_model_at_a_blank_line(gemma3_model: Prepared) -> None:  # noqa: F811
    from edge_agent.llm.base import GenerationRequest
    from edge_agent.llm.runtime import OnnxGenerator

    generator = OnnxGenerator.load(gemma3_model.int4_dir, threads=2)
    # A question the float export and every quantization answer alike (the 270M base
    # model's arithmetic is not: fp32 answers "2+2=4", int8 "2+2=4", int4 variants "2.").
    prompt = "Q: What is the capital of France?\nA: Paris.\n\nQ: What colour is the sky?\nA:"
    result = generator.generate(GenerationRequest(generator.render(prompt), max_new_tokens=24))
    assert "\n\n" not in result.text
    assert "Blue" in result.text


def test_quality_floor_over_the_fixed_text(gemma3_model: Prepared) -> None:  # noqa: F811
    assert gemma3_model.fp32_dir is not None
    result = compare(gemma3_model.int4_dir, gemma3_model.fp32_dir, DEFAULT_TEXT.read_text())
    assert result.tokens >= 2000
    assert result.top1_agreement >= MIN_TOP1
    assert result.mean_kl <= MAX_MEAN_KL


def test_prepare_cli_returns_the_cached_folder(gemma3_model: Prepared) -> None:  # noqa: F811
    done = run_cli("model", "prepare", "gemma3-270m")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(gemma3_model.int4_dir)


def test_what_users_read_meets_the_bars(gemma3_model: Prepared) -> None:  # noqa: F811
    real = 20 if DEFAULT_DATA.is_file() else 0
    result = bench_narration(
        gemma3_model.int4_dir, windows=4, data=DEFAULT_DATA if real else None, real_windows=real
    )
    tallies = result.tallies.values()
    total = sum(t.total for t in tallies)
    assert total == 20 + real
    assert sum(t.role_errors for t in tallies) == 0, [t.examples for t in tallies]
    assert sum(t.bad_titles for t in tallies) == 0
    assert sum(t.model for t in tallies) / total >= MIN_MODEL_SHARE, result.tallies
    assert sum(t.recalled for t in tallies) / total >= MIN_RECALL, result.tallies
