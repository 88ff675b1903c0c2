"""The fused graph computes what torch eager computes for Gemma 3's own specifics.

Gemma 3 differs from Gemma 2 where a hand-written graph could go wrong: RMS norms of
queries and keys before rotary, a smaller rotary base on the sliding layers, linear
position scaling on the full-attention layers only, and no soft-caps. A tiny random
Gemma 3 with a 16-token window and a 64-token prompt makes each of them matter.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.export.pipeline import export_model
from edge_agent.export.sources import resolve
from edge_agent.export.spec import QuantSpec
from edge_agent.export.tiny import TinyModel
from edge_agent.export.tokenizer import CORPUS
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.runtime import OnnxGenerator
from tests.support.models import OnnxHarness

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

SEQ_LEN = 64
PREFILL = 40
# Measured about 1e-5 against logits with std ~3.
FP32_ATOL = 2e-4
CONFIG: dict[str, Any] = {
    "vocab_size": 768,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "sliding_window": 16,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    "max_position_embeddings": 1024,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
}


def _torch_model(hf_dir: Path, **overrides: Any) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        hf_dir, attn_implementation="eager", **overrides
    )
    return model.eval()


def _logits(model: Any, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(model(torch.tensor([ids])).logits[0].numpy(), dtype=np.float64)


@pytest.fixture(scope="module")
def gemma3(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A seeded tiny Gemma 3 (torch folder) and its fused fp32 and int4 exports."""
    root = tmp_path_factory.mktemp("gemma3")
    hf = root / "hf"
    config = transformers.Gemma3TextConfig(**CONFIG)
    torch.manual_seed(7)
    model = transformers.Gemma3ForCausalLM._from_config(config, attn_implementation="eager")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # Non-zero norm gains (Gemma adds 1) and large q/k weights, so the q/k norms,
            # the window and the rotary bases all move the logits.
            std = 0.3 if "norm" in name else 0.6 if ("q_proj" in name or "k_proj" in name) else 0.15
            param.normal_(0.0, std, generator=generator)
    model.save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_model.hf_dir / name, hf / name)
    export_model(
        resolve(str(hf)), root / "int4", QuantSpec(), fp32_dir=root / "fp32", progress=False
    )
    return {"hf": hf, "fp32": root / "fp32", "int4": root / "int4"}


@pytest.fixture(scope="module")
def ids(tiny_model: TinyModel) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_model.hf_dir / "tokenizer.json"))
    out: list[int] = tok.encode("<bos>" + CORPUS, add_special_tokens=False).ids[:SEQ_LEN]
    assert len(out) == SEQ_LEN
    return out


def test_fused_fp32_matches_torch_eager_in_one_pass_and_through_the_cache(
    gemma3: dict[str, Path], ids: list[int]
) -> None:
    eager = _logits(_torch_model(gemma3["hf"]), ids)
    harness = OnnxHarness(gemma3["fp32"])
    full = harness.full_logits(ids)
    cached = harness.cached_logits(ids, PREFILL)
    assert np.abs(full - eager).max() < FP32_ATOL
    assert np.abs(cached - eager).max() < FP32_ATOL


@pytest.mark.parametrize(
    "override",
    [
        {"sliding_window": 4 * SEQ_LEN},
        {"rope_local_base_freq": 1_000_000.0},
        {"rope_scaling": None},
    ],
    ids=["window", "local-rope-base", "linear-scaling"],
)
def test_each_gemma3_specific_moves_the_logits(
    gemma3: dict[str, Path], ids: list[int], override: dict[str, Any]
) -> None:
    # If the fused graph had left any of these out, parity above would fail by this much.
    eager = _logits(_torch_model(gemma3["hf"]), ids)
    changed = _logits(_torch_model(gemma3["hf"], **override), ids)
    assert np.abs(changed - eager).max() > 100 * FP32_ATOL


def test_the_int4_folder_generates_like_a_no_cache_reference(gemma3: dict[str, Path]) -> None:
    generator = OnnxGenerator.load(gemma3["int4"])
    assert generator.manifest.graph == "fused"
    assert generator.manifest.quantization.shared_embedding
    harness = OnnxHarness(gemma3["int4"])
    prompt = generator.encode(generator.render("The kitchen is warm."))
    result = generator.generate(GenerationRequest(generator.render("The kitchen is warm."), 16))
    expected, _ = harness.greedy_without_cache(prompt, 16, set(generator.manifest.eos_token_ids))
    assert result.text == generator.decode(expected)
