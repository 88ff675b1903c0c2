"""A head split by rows: the first rows read 8-bit blocks, the rest 4-bit, in both directions.

The LM head and the embedding lookup that shares it are both rewritten. Quantizing the
tiny model's float export three ways (8-bit head, 4-bit head, split) and feeding ids
from one side of the split at a time shows each half is exactly its own quantization.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ExportError
from edge_agent.export.spec import QuantSpec
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.runtime import OnnxGenerator
from tests.support.models import OnnxHarness

onnx = pytest.importorskip("onnx")

ROWS = 384  # of the tiny model's 768-token vocabulary


def _quantize(tiny: TinyModel, out: Path, head_bits: int, head_int8_rows: int = 0) -> Path:
    from edge_agent.export.int4 import quantize_folder

    spec = QuantSpec(head_bits=head_bits, head_int8_rows=head_int8_rows)
    quantize_folder(tiny.fp32_dir, out, spec, progress=False)
    return out


@pytest.fixture(scope="module")
def heads(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("split-head")
    return {
        "int8": _quantize(tiny_model, root / "int8", head_bits=8),
        "int4": _quantize(tiny_model, root / "int4", head_bits=4),
        "split": _quantize(tiny_model, root / "split", head_bits=4, head_int8_rows=ROWS),
    }


@pytest.mark.slow
def test_each_side_of_the_split_is_its_own_quantization(heads: dict[str, Path]) -> None:
    run = {name: OnnxHarness(folder) for name, folder in heads.items()}
    rng = np.random.default_rng(7)
    # Ids below the split are looked up in the 8-bit rows, so the hidden states match
    # the 8-bit head's model; ids above it match the 4-bit one's.
    for ids, twin in (
        (rng.integers(4, ROWS, 24).tolist(), "int8"),
        (rng.integers(ROWS, 768, 24).tolist(), "int4"),
    ):
        split, same = run["split"].full_logits(ids), run[twin].full_logits(ids)
        assert split.shape == same.shape == (24, 768)
        side = slice(None, ROWS) if twin == "int8" else slice(ROWS, None)
        np.testing.assert_allclose(split[:, side], same[:, side], rtol=1e-5, atol=1e-5)
    # The two halves really differ in precision: the int4 head moves the top rows.
    ids = rng.integers(4, ROWS, 24).tolist()
    assert not np.allclose(run["int4"].full_logits(ids), run["int8"].full_logits(ids))


@pytest.mark.slow
def test_the_split_head_is_stored_once_and_counted_in_the_graph(heads: dict[str, Path]) -> None:
    graph = onnx.load(str(heads["split"] / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("GatherBlockQuantized") == 2  # one lookup per row range
    bits = sorted(
        next(a.i for a in n.attribute if a.name == "bits")
        for n in graph.graph.node
        if n.op_type == "MatMulNBits" and "lm_head" in n.name
    )
    assert bits == [4, 8]
    names = {t.name for t in graph.graph.initializer}
    assert not any(name.startswith("model.embed_tokens.weight_q") for name in names)
    split = (heads["split"] / "model.onnx.data").stat().st_size
    int8, int4 = ((heads[k] / "model.onnx.data").stat().st_size for k in ("int8", "int4"))
    assert int4 < split < int8


@pytest.mark.slow
def test_the_runtime_generates_from_a_split_head(
    tiny_model: TinyModel, heads: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "split"
    shutil.copytree(heads["split"], folder)
    for name in ("tokenizer.json", "manifest.json"):
        shutil.copy(tiny_model.int4_dir / name, folder / name)
    generator = OnnxGenerator.load(folder, verify=False)
    result = generator.generate(GenerationRequest(generator.render("Kitchen 21.5 C."), 12))
    assert result.new_tokens > 0


def test_a_split_needs_a_four_bit_head(tmp_path: Path) -> None:
    from edge_agent.export.int4 import quantize_folder

    with pytest.raises(ExportError, match="4-bit head"):
        quantize_folder(tmp_path, tmp_path / "out", QuantSpec(head_bits=8, head_int8_rows=64))
