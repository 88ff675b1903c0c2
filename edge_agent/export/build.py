"""The tiny Gemma 2 build steps: tokenizer and torch weights, then the production export path.

The ONNX folders come from ``pipeline.export_model``, the same code (graph engine,
streamed weights, int4 quantizer, manifest) that exports a real Gemma for a device,
so every test that loads the tiny model exercises what users run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import structlog

from edge_agent.errors import ExportError
from edge_agent.export.gemma2 import build_torch_model
from edge_agent.export.pipeline import export_model
from edge_agent.export.recipe import TinyGemma2Recipe
from edge_agent.export.sources import ModelSource, Prompting
from edge_agent.export.spec import QuantSpec
from edge_agent.export.tokenizer import SPECIAL_TOKENS, build_tokenizer, write_tokenizer
from edge_agent.export.weights import ArrayWeights

log = structlog.get_logger(__name__)

SOURCE = "tiny-random-gemma2"
PROMPT_TEMPLATE = "<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"
_STEPS = 3


def build_folders(
    recipe: TinyGemma2Recipe,
    *,
    hf_dir: Path,
    fp32_dir: Path,
    int4_dir: Path,
    progress: bool,
    graph: str = "fused",
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
    write_tokenizer(tokenizer, hf_dir, recipe.context_length)
    step(f"exporting ({graph} graph) and quantizing to int4")
    config_json = (hf_dir / "tokenizer_config.json").read_bytes()
    source = ModelSource(
        family="gemma2",
        source=SOURCE,
        revision=recipe.digest(),
        config=model.config,
        weights=ArrayWeights(model.state_dict()),
        tokenizer=tokenizer,
        prompting=Prompting(PROMPT_TEMPLATE, "chat", ()),
        eos_token_ids=(SPECIAL_TOKENS.index("<eos>"), end_of_turn),
        tokenizer_files={"tokenizer_config.json": config_json},
    )
    spec = QuantSpec(recipe.block_size, recipe.accuracy_level, recipe.symmetric)
    export_model(source, int4_dir, spec, fp32_dir=fp32_dir, graph=graph, progress=False)


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
