"""The tiny Gemma 2 build steps: tokenizer, torch weights, fp32 export, int4, manifests."""

from __future__ import annotations

import sys
from pathlib import Path

import structlog

from edge_agent.errors import ExportError
from edge_agent.export.folder import write_manifest
from edge_agent.export.gemma2 import build_torch_model
from edge_agent.export.onnx_export import export_decoder
from edge_agent.export.quantize import Int4Spec, quantize_int4
from edge_agent.export.recipe import TinyGemma2Recipe
from edge_agent.export.tokenizer import SPECIAL_TOKENS, build_tokenizer, write_tokenizer
from edge_agent.llm.manifest import Manifest, Quantization

log = structlog.get_logger(__name__)

SOURCE = "tiny-random-gemma2"
PROMPT_TEMPLATE = "<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"
_STEPS = 5


def build_folders(
    recipe: TinyGemma2Recipe, *, hf_dir: Path, fp32_dir: Path, int4_dir: Path, progress: bool
) -> None:
    """Write the torch reference, the fp32 ONNX folder and the int4 ONNX folder."""
    step = _Progress(progress)
    step("training tokenizer")
    tokenizer = build_tokenizer(recipe.vocab_size)
    if [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS[:3]] != [0, 1, 2]:
        raise ExportError("tokenizer special ids drifted from Gemma's <pad>=0 <eos>=1 <bos>=2")
    end_of_turn = int(tokenizer.token_to_id("<end_of_turn>"))
    step("building torch model")
    model = build_torch_model(recipe, tokenizer.get_vocab_size())
    hf_dir.mkdir(parents=True)
    model.save_pretrained(hf_dir)
    step("exporting fp32 ONNX")
    export_decoder(model, fp32_dir)
    step("quantizing to int4")
    spec = Int4Spec(recipe.block_size, recipe.accuracy_level, recipe.symmetric)
    quantize_int4(fp32_dir, int4_dir, spec)
    step("writing tokenizer and manifests")
    int4 = Quantization("matmul_nbits", 4, spec.block_size, spec.accuracy_level, spec.symmetric)
    fp32 = Quantization("none", 32, 0, 0, False)
    write_tokenizer(tokenizer, hf_dir, recipe.context_length)
    for folder, quant in ((fp32_dir, fp32), (int4_dir, int4)):
        write_tokenizer(tokenizer, folder, recipe.context_length)
        write_manifest(folder, _draft(recipe, quant, end_of_turn))


def _draft(recipe: TinyGemma2Recipe, quant: Quantization, end_of_turn: int) -> Manifest:
    """The manifest before checksums; ``write_manifest`` fills in files and tools."""
    return Manifest(
        family="gemma2",
        source=SOURCE,
        revision=recipe.digest(),
        context_length=recipe.context_length,
        bos_token_id=SPECIAL_TOKENS.index("<bos>"),
        eos_token_ids=(SPECIAL_TOKENS.index("<eos>"), end_of_turn),
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
        prompt_template=PROMPT_TEMPLATE,
        quantization=quant,
        files={},
        stop_strings=(),
        prompt_format="chat",
        num_layers=recipe.num_hidden_layers,
        num_kv_heads=recipe.num_key_value_heads,
        head_dim=recipe.head_dim,
    )


class _Progress:
    """Numbered step lines on stderr (stdout is reserved for the CLI's result)."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._n = 0

    def __call__(self, what: str) -> None:
        self._n += 1
        log.info("tiny_model_step", step=self._n, of=_STEPS, what=what)
        if self._enabled:
            print(f"[{self._n}/{_STEPS}] {what}", file=sys.stderr, flush=True)
