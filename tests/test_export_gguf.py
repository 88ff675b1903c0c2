"""Export from ``.gguf``: the tiny Gemma 2 written as GGUF exports back to the same logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.export.tiny import TinyModel
from edge_agent.llm.manifest import verify
from tests.support.agent import run_cli
from tests.support.models import OnnxHarness

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

FP32_ATOL = 2e-4


def write_tiny_gguf(hf_dir: Path, path: Path) -> None:
    """Write the tiny model as llama.cpp would: F32 tensors, norms stored as 1 + w."""
    from tokenizers import Tokenizer
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    config = model.config
    writer = gguf.GGUFWriter(str(path), "gemma2")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_sliding_window(config.sliding_window)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_float32("gemma2.attn_logit_softcapping", config.attn_logit_softcapping)
    writer.add_float32("gemma2.final_logit_softcapping", config.final_logit_softcapping)
    vocab = Tokenizer.from_file(str(hf_dir / "tokenizer.json")).get_vocab()
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types([3 if t.startswith("<") and t.endswith(">") else 1 for t in tokens])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    names = {hf: g for g, hf in get_gguf_hf_weights_map(model).items()}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: llama.cpp writes no output.weight
        array = tensor.float().numpy()
        if name.endswith("norm.weight"):
            array = array + 1.0
        writer.add_tensor(names[name], np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def exported(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny GGUF exported through the CLI: (int4, fp32) folders."""
    root = tmp_path_factory.mktemp("gguf-export")
    path = root / "tiny.gguf"
    write_tiny_gguf(tiny_model.hf_dir, path)
    int4, fp32 = root / "int4", root / "fp32"
    done = run_cli("model", "export", str(path), "--out", str(int4), "--fp32-out", str(fp32))
    assert done.returncode == 0, done.stderr
    return int4, fp32


def test_gguf_export_matches_the_original_torch_model(
    tiny_model: TinyModel, exported: tuple[Path, Path]
) -> None:
    """Soft-caps, window, query scale and norm offsets all survive the GGUF round trip."""
    ids = list(range(5, 69))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_model.hf_dir, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].numpy()
    harness = OnnxHarness(exported[1])
    assert np.abs(harness.cached_logits(ids, 40) - reference).max() < FP32_ATOL


def test_gguf_manifest_is_a_completion_model(exported: tuple[Path, Path]) -> None:
    manifest = verify(exported[0])
    assert manifest.family == "gemma2"
    assert manifest.prompt_format == "completion"
    assert manifest.render("Hi") == "<bos>Hi"
    assert manifest.stop_strings == ("\n\n",)
    assert manifest.revision.startswith("gguf-")
    assert manifest.quantization.shared_embedding
