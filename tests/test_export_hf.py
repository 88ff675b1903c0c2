"""``edge-agent model export`` of a Hugging Face folder: parity, int4 layout, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.export.tiny import TinyModel
from edge_agent.llm.manifest import verify
from tests.support.agent import run_cli
from tests.support.models import OnnxHarness

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

FP32_ATOL = 2e-4  # as in test_model_parity: measured ~2e-5


@pytest.fixture(scope="module")
def exported(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model's HF folder exported through the real CLI (int4 and fp32 folders)."""
    out = tmp_path_factory.mktemp("export")
    int4, fp32 = out / "int4", out / "fp32"
    done = run_cli(
        "model", "export", str(tiny_model.hf_dir), "--out", str(int4), "--fp32-out", str(fp32)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(int4)
    return int4, fp32


def _torch_logits(hf_dir: Path, ids: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        hf_dir, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        return np.asarray(model(torch.tensor([ids])).logits[0].numpy(), dtype=np.float64)


def test_streamed_fp32_export_matches_torch_eager(
    tiny_model: TinyModel, exported: tuple[Path, Path]
) -> None:
    ids = list(range(5, 69))  # longer than the sliding window (16)
    reference = _torch_logits(tiny_model.hf_dir, ids)
    harness = OnnxHarness(exported[1])
    assert np.abs(harness.full_logits(ids) - reference).max() < FP32_ATOL
    assert np.abs(harness.cached_logits(ids, 40) - reference).max() < FP32_ATOL


def test_int4_stores_the_tied_embedding_once(exported: tuple[Path, Path]) -> None:
    int4, fp32 = exported
    graph = onnx.load(str(int4 / "model.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert "GatherBlockQuantized" in ops
    # Per layer QKV (fused), output, gate, up and down, then the LM head.
    assert ops.count("MatMulNBits") == 4 * 5 + 1
    assert "Gather" not in [n.op_type for n in graph.node if n.input and "embed" in n.input[0]]
    inits = {t.name: t for t in graph.initializer}
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in graph.node if n.op_type == "MatMulNBits" and "lm_head" in n.name)
    reshape = next(n for n in graph.node if gather.input[0] in n.output)
    # The lookup reads the head's int4 blocks (through a Reshape), not a copy.
    assert reshape.input[0] == head.input[1]
    floats = [n for n, t in inits.items() if t.data_type == onnx.TensorProto.FLOAT]
    # Only scales and the rotary cos/sin tables are 2-D float tensors.
    matrices = [n for n in floats if len(inits[n].dims) == 2 and not n.endswith("_scales")]
    assert all(n.startswith("rotary_") for n in matrices)
    float_bytes = (fp32 / "model.onnx.data").stat().st_size
    assert (int4 / "model.onnx.data").stat().st_size < float_bytes / 4


def test_manifest_carries_template_eos_and_quantization(
    tiny_model: TinyModel, exported: tuple[Path, Path]
) -> None:
    manifest = verify(exported[0])
    assert manifest.family == "gemma2"
    assert manifest.prompt_format == "chat"
    assert manifest.render("Hi") == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    assert set(manifest.eos_token_ids) == {1, 5}  # <eos>, <end_of_turn>
    assert manifest.quantization.shared_embedding
    assert manifest.quantization.block_size == 32
    assert manifest.quantization.accuracy_level == 4
    assert manifest.context_length == 1024
    assert manifest.source == str(tiny_model.hf_dir)
    assert manifest.revision.startswith("local-")
    assert {"model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"} <= set(
        manifest.files
    )
    assert "chat_template" in json.loads((exported[0] / "tokenizer_config.json").read_text())
    assert manifest.tools["onnxruntime"] != "missing"


def test_the_runtime_loads_and_generates_from_the_export(exported: tuple[Path, Path]) -> None:
    from edge_agent.llm.base import GenerationRequest
    from edge_agent.llm.runtime import OnnxGenerator

    generator = OnnxGenerator.load(exported[0], threads=1)
    result = generator.generate(
        GenerationRequest(generator.render("The kitchen"), max_new_tokens=4)
    )
    assert result.new_tokens >= 1


def test_export_refuses_a_non_empty_out_folder(tiny_model: TinyModel, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    done = run_cli("model", "export", str(tiny_model.hf_dir), "--out", str(tmp_path))
    assert done.returncode == 1
    assert "not empty" in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_calibrated_rounding_exports_a_working_folder_closer_to_float(
    tiny_model: TinyModel, exported: tuple[Path, Path], tmp_path: Path
) -> None:
    from edge_agent.export.quality import DEFAULT_TEXT, compare

    out = tmp_path / "calibrated"
    done = run_cli(
        "model", "export", str(tiny_model.hf_dir), "--out", str(out), "--rounding", "calibrated",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "calibrating" in done.stdout + done.stderr
    manifest = verify(out)
    assert manifest.quantization.rounding == "calibrated"
    assert verify(exported[0]).quantization.rounding == "nearest"
    # About 1,000 tokens of the quality text (calibration reads a different one).
    text = DEFAULT_TEXT.read_text(encoding="utf-8")[:3000]
    calibrated = compare(out, exported[1], text, threads=1)
    nearest = compare(exported[0], exported[1], text, threads=1)
    assert calibrated.mean_kl < nearest.mean_kl, (calibrated, nearest)
