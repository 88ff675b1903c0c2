"""The tiny Gemma 2 as a torch model: seeded random weights, eager attention."""

from __future__ import annotations

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from edge_agent.export.recipe import TinyGemma2Recipe


def build_torch_model(recipe: TinyGemma2Recipe, vocab_size: int) -> Gemma2ForCausalLM:
    """A deterministic random-weight Gemma 2 from ``recipe`` (same recipe, same weights)."""
    kwargs = {**recipe.config_kwargs(), "vocab_size": vocab_size}
    config = Gemma2Config(**kwargs)  # type: ignore[no-untyped-call]
    # Eager attention: the SDPA path silently drops Gemma 2's attention soft-cap, and
    # the export traces whichever path the model was built with.
    torch.manual_seed(recipe.seed)
    model: Gemma2ForCausalLM = Gemma2ForCausalLM._from_config(config, attn_implementation="eager")
    generator = torch.Generator().manual_seed(recipe.seed)
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, recipe.embed_std, generator=generator)
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.normal_(0.0, recipe.qk_std, generator=generator)
            layer.self_attn.k_proj.weight.normal_(0.0, recipe.qk_std, generator=generator)
            # Gemma's RMSNorm scales by (1 + weight).
            layer.post_attention_layernorm.weight.fill_(recipe.residual_gain - 1.0)
            layer.post_feedforward_layernorm.weight.fill_(recipe.residual_gain - 1.0)
    model.eval()  # type: ignore[no-untyped-call]
    return model
