"""The build recipe of the tiny random-weight Gemma 2 used by tests and the demo."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from edge_agent.export.tokenizer import CORPUS, SPECIAL_TOKENS

# Bump when the export, quantize or folder code changes what it writes: the cache
# key includes it, so old builds are not reused.
EXPORT_CODE_VERSION = 2


@dataclass(frozen=True, slots=True)
class TinyGemma2Recipe:
    """Everything that decides the tiny model's bytes; its hash names the cache folder."""

    seed: int = 1234
    vocab_size: int = 768
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    context_length: int = 1024
    # Smaller than the parity test's prompt so the sliding layers really drop tokens.
    sliding_window: int = 16
    # Low cap plus large q/k weights: raw attention scores run well past the cap, so
    # an export that loses the soft-cap (SDPA) gives visibly different logits.
    attn_logit_softcapping: float = 5.0
    final_logit_softcapping: float = 15.0
    # Init stds: at the usual 0.02 a random model's logits are flat, so int4 noise
    # would flip every argmax; these give peaked logits and scores above the cap.
    weight_std: float = 0.15
    embed_std: float = 0.35
    qk_std: float = 0.6
    # Gain of the post-attention and post-feedforward norms. With tied embeddings
    # and unit gains the residual stream is mostly the input token's embedding, so
    # greedy decoding only repeats the last token; more gain lets the layers steer
    # the output. More still makes logits so flat that int4 noise flips most argmaxes.
    residual_gain: float = 2.0
    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = True

    def config_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``transformers.Gemma2Config``."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "query_pre_attn_scalar": self.head_dim,
            "max_position_embeddings": self.context_length,
            "sliding_window": self.sliding_window,
            "attn_logit_softcapping": self.attn_logit_softcapping,
            "final_logit_softcapping": self.final_logit_softcapping,
            "initializer_range": self.weight_std,
            "pad_token_id": SPECIAL_TOKENS.index("<pad>"),
            "eos_token_id": SPECIAL_TOKENS.index("<eos>"),
            "bos_token_id": SPECIAL_TOKENS.index("<bos>"),
            "tie_word_embeddings": True,
        }

    def digest(self) -> str:
        """Short stable hash of the recipe, the tokenizer corpus and the code version."""
        payload = json.dumps(
            {"recipe": asdict(self), "corpus": CORPUS, "code": EXPORT_CODE_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


TINY_GEMMA2 = TinyGemma2Recipe()
