"""Benchmark-shaped models with random weights (speed and memory do not depend on the values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from edge_agent.export.pipeline import ExportResult, export_model
from edge_agent.export.sources import ModelSource, Prompting
from edge_agent.export.spec import QuantSpec
from edge_agent.export.weights import RandomWeights

# google/gemma-2-2b-it's config.json (values copied; the model itself is never downloaded).
SHAPES: dict[str, dict[str, Any]] = {
    "gemma-2-2b": {
        "model_type": "gemma2",
        "vocab_size": 256000,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "sliding_window": 4096,
        "max_position_embeddings": 8192,
        "rope_theta": 10000.0,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "pad_token_id": 0,
        "eos_token_id": [1, 107],
        "bos_token_id": 2,
        "tie_word_embeddings": True,
    },
}
_TEMPLATE = "<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


def random_source(shape: str, *, seed: int = 0) -> ModelSource:
    """A ``ModelSource`` of ``shape`` with seeded random weights and a placeholder tokenizer."""
    from transformers import AutoConfig

    kwargs = dict(SHAPES[shape])
    config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    std = 0.02
    shapes = _param_shapes(config)
    tokenizer = placeholder_tokenizer(int(config.vocab_size))
    return ModelSource(
        family="gemma2",
        source=f"random-weights {shape} (benchmark only: random weights, placeholder tokenizer)",
        revision=f"seed-{seed}",
        config=config,
        weights=RandomWeights(shapes, seed, std),
        tokenizer=tokenizer,
        prompting=Prompting(_TEMPLATE, "chat", ()),
        eos_token_ids=(1, 107),
    )


def build_random(
    shape: str,
    out_dir: Path,
    spec: QuantSpec,
    *,
    graph: str = "fused",
    progress: bool = True,
    verify_positions: int = 1,
    kv_dtype: str = "float32",
) -> ExportResult:
    """Export a random-weight model of ``shape`` to ``out_dir`` through the common path."""
    return export_model(
        random_source(shape),
        out_dir,
        spec,
        graph=graph,
        progress=progress,
        verify_positions=verify_positions,
        kv_dtype=kv_dtype,
    )


def placeholder_tokenizer(vocab_size: int) -> Tokenizer:
    """A word-level tokenizer with Gemma's special ids and ``vocab_size`` filler tokens.

    It only has to encode prompts to valid ids for benchmarks; the text is meaningless.
    """
    special = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(special)}
    for i in range(len(special), vocab_size):
        vocab[f"t{i}"] = i
    vocab["<start_of_turn>"], vocab["<end_of_turn>"] = 106, 107
    del vocab["t106"], vocab["t107"]
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"])
    return tokenizer


def _param_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return {name: tuple(p.shape) for name, p in model.named_parameters()}
