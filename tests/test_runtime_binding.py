"""IOBinding engines give the same tokens as plain ``session.run``, for both graph kinds."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.errors import ModelError
from edge_agent.export.folder import write_manifest
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.manifest import Manifest
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.llm.session import uses_group_query_attention

PROMPTS = (
    "Summarise the kitchen temperature.",
    "The living room is warm and the humidity is 45 percent. " * 3,
)
HEAD = "Sensor readings follow. Summarise them for the household in one sentence.\n"


def _same_tokens(folder: Path) -> None:
    bound = OnnxGenerator.load(folder)
    plain = OnnxGenerator.load(folder, io_binding=False)
    for user in PROMPTS:
        prompt = bound.render(user)
        a = bound.generate(GenerationRequest(prompt, 24))
        b = plain.generate(GenerationRequest(prompt, 24))
        assert (a.text, a.new_tokens, a.stop_reason) == (b.text, b.new_tokens, b.stop_reason)
    # The prefix cache over the bound engine: same text as the uncached plain run.
    for tail in ("kitchen 21.5 C", "garage door open"):
        prompt = bound.render(HEAD + tail)
        cut = prompt.find(HEAD) + len(HEAD)
        want = plain.generate(GenerationRequest(prompt, 12))
        got = bound.generate(GenerationRequest(prompt, 12, prefix_chars=cut))
        assert got.text == want.text
    assert bound.reused_tokens_total > 0


@pytest.mark.slow
def test_bound_growing_cache_equals_plain_run(tiny_model: TinyModel) -> None:
    assert not uses_group_query_attention(tiny_model.int4_dir / "model.onnx")
    _same_tokens(tiny_model.int4_dir)


@pytest.fixture(scope="module")
def builder_folder(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model through onnxruntime-genai's builder (GroupQueryAttention graph)."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        pytest.skip("onnxruntime-genai (bench extra) is not installed")
    out = tmp_path_factory.mktemp("builder")
    raw = out / "raw"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(tiny_model.hf_dir),
            "-o",
            str(raw),
            "-p",
            "int4",
            "-e",
            "cpu",
            "--extra_options",
            "accuracy_level=4",
            "prune_lm_head=true",
            "windowed_kv_cache=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        pytest.skip(f"the builder failed here: {built.stderr.strip().splitlines()[-1:]}")
    folder = out / "model"
    folder.mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copyfile(raw / name, folder / name)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_model.int4_dir / name, folder / name)
    decoder = json.loads((raw / "genai_config.json").read_text())["model"]["decoder"]
    draft = replace(
        Manifest.from_dir(tiny_model.int4_dir),
        files={},
        head_dim=decoder["head_size"],
        num_kv_heads=decoder["num_key_value_heads"],
    )
    write_manifest(folder, draft)
    return folder


@pytest.mark.slow
def test_shared_kv_buffer_equals_plain_run(builder_folder: Path) -> None:
    assert uses_group_query_attention(builder_folder / "model.onnx")
    _same_tokens(builder_folder)


def test_the_graph_kind_is_read_from_the_op_types(tmp_path: Path) -> None:
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"\x0a\x13GroupQueryAttention\x12\x00")
    assert uses_group_query_attention(graph)
    graph.write_bytes(b"\x0a\x03Add")
    assert not uses_group_query_attention(graph)
    graph.write_bytes(b"GroupQueryAttention sliding_window_cache")
    with pytest.raises(ModelError, match="windowed_kv_cache=false"):
        uses_group_query_attention(graph)
