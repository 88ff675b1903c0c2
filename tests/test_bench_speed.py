"""``bench narration --speed``: the summary's keys and ratios (pure), and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bench.speed import render, summarise
from edge_agent.export.tiny import TinyModel
from tests.support.agent import run_cli


def _result(
    engine: str, latency: float, rate: float, texts: list[str], **kw: Any
) -> dict[str, Any]:
    runs = [
        {"kind": "summary", "latency_s": latency, "new_tokens": 11, "decode_s": 10 / rate,
         "text": t, **kw}
        for t in texts
    ]  # fmt: skip
    return {"engine": engine, "skipped": "", "runs": runs}


def test_ratios_are_medians_of_each_rounds_own_ratio() -> None:
    texts = ["a", "b"]
    rounds = [
        {
            "ours-draft": _result("ours-draft", 1.0, 20.0, texts, verify_steps=5, accepted=5),
            "ours-plain": _result("ours-plain", 2.0, 10.0, texts),
            "ours-pairs": _result("ours-pairs", 2.2, 9.0, texts),
            "llama.cpp": _result("llama.cpp", 3.0, 8.0, ["x", "y"]),
            "onnxruntime-genai": {"engine": "onnxruntime-genai", "skipped": "not installed"},
        },
        {
            "ours-draft": _result("ours-draft", 2.0, 15.0, texts, verify_steps=4, accepted=2),
            "ours-plain": _result("ours-plain", 2.0, 10.0, texts),
            "ours-pairs": _result("ours-pairs", 2.0, 10.0, texts),
            "llama.cpp": _result("llama.cpp", 3.0, 8.0, ["x", "y"]),
            "onnxruntime-genai": {"engine": "onnxruntime-genai", "skipped": "not installed"},
        },
    ]
    engines = ["ours-draft", "ours-plain", "ours-pairs", "llama.cpp", "onnxruntime-genai"]
    summary = summarise(rounds, engines)
    assert summary["speedup_vs_plain_rounds"] == [2.0, 1.5]
    assert summary["speedup_vs_plain"] == 1.75
    assert summary["best_peer"] == "llama.cpp"
    assert summary["speedup_vs_best_peer_rounds"] == [3.0, 1.5]
    assert summary["identical_text"] is True
    assert summary["engines"]["ours-draft"]["accepted_per_step"] == 0.75
    assert summary["skipped"] == {"onnxruntime-genai": "not installed"}
    text = render(summary, 2)
    assert "1.75x (rounds 2.00 1.50)" in text
    assert "skipped onnxruntime-genai: not installed" in text
    rounds[1]["ours-pairs"]["runs"][0]["text"] = "different"
    assert summarise(rounds, engines)["identical_text"] is False


@pytest.mark.slow
def test_the_cli_measures_our_runtime_with_and_without_drafting(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    from edge_agent.export.graph_options import retarget_folder

    folder = tmp_path / "tiny-k3"
    retarget_folder(tiny_model.int4_dir, folder, verify_positions=3)
    done = run_cli(
        "bench", "narration", "--speed", "--model", str(folder), "--no-peers",
        "--rounds", "2", "--speed-windows", "1", "--max-new-tokens", "12",
        "--ask-max-new-tokens", "12", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["identical_text"] is True
    assert summary["rounds"] == 2
    assert summary["speedup_vs_plain"] > 0
    assert summary["best_peer"] is None
    assert "ours-draft" in done.stdout
