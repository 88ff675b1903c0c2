"""``edge-agent bench``: table and ratios, peers skipped cleanly, a real run (no speed asserts)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from edge_agent.bench.report import render_rounds, render_table, significant
from edge_agent.bench.result import EngineResult
from edge_agent.bench.runner import Contender, run_all
from edge_agent.bench.workload import Workload, build
from edge_agent.cli.bench import add_bench_command
from edge_agent.export.tiny import TinyModel
from tests.support.agent import run_cli


def _result(engine: str, decode: float, rss: float, **kw: object) -> EngineResult:
    return EngineResult(
        engine=engine,
        prompt_tokens=128,
        new_tokens=64,
        prefill_tok_s=100.0,
        decode_tok_s=decode,
        ttft_s=1.0,
        peak_rss_mb=rss,
        runs_peak_rss_mb=rss * 0.9,
        **kw,  # type: ignore[arg-type]
    )


def test_the_table_shows_ours_over_peer_ratios_and_skipped_peers() -> None:
    ours = _result("edge-agent", 10.0, 1000.0, ttft_uncached_s=4.0, ttft_cached_s=1.0)
    genai = _result("onnxruntime-genai", 8.0, 2000.0)
    llama = EngineResult(engine="llama.cpp", skipped="llama-cpp-python is not installed")
    table = render_table([ours, genai, llama])
    decode = next(line for line in table.splitlines() if line.startswith("decode tok/s"))
    assert decode.split()[-1] == "1.25x"
    for label in ("peak RSS MiB, timed runs", "peak RSS MiB, whole bench"):
        rss = next(line for line in table.splitlines() if line.startswith(label))
        assert rss.split()[-1] == "0.50x"
    assert "cached-prefix TTFT / uncached TTFT (ours): 0.25" in table
    assert "skipped llama.cpp: llama-cpp-python is not installed" in table
    assert "ours/genai" in table
    assert "ours/llama" not in table


def test_rounds_take_the_median_of_each_rounds_ratio_and_the_highest_peak() -> None:
    # The machine slows down over the bench: each round's ratio is 1.0, the pooled one not.
    rounds = [
        [_result("edge-agent", 10.0 / k, 1000.0 + k), _result("onnxruntime-genai", 10.0 / k, 900.0)]
        for k in (1, 2, 4)
    ]
    rounds[1][0] = _result("edge-agent", 6.0, 1000.0)  # one round 1.2x
    table = render_rounds(rounds)
    decode = next(line for line in table.splitlines() if line.startswith("decode tok/s"))
    assert decode.split()[2:] == ["6.00", "5.00", "1.00x"]  # medians; median of 1, 1.2, 1
    rss = next(line for line in table.splitlines() if line.startswith("peak RSS MiB, whole"))
    assert rss.split()[-3:] == ["1004", "900", "1.12x"]
    assert "decode ours/genai in each of 3 rounds: 1.00 1.20 1.00" in table


def test_the_workload_gives_every_engine_the_same_ids() -> None:
    words = ["alpha", "beta", "gamma", "delta"]

    def encode(text: str) -> list[int]:
        return [hash(w) % 1000 for w in text.split()]

    def decode(ids: list[int]) -> str:
        return " ".join(words[i % 4] for i in ids)

    work = build(
        encode, decode, prompt_tokens=16, new_tokens=4, prefix_tokens=20, suffix_tokens=5, runs=1
    )
    assert work.prompt_ids == encode(work.prompt_text)
    assert len(work.prompt_ids) == 16
    assert work.prefix_ids + work.suffix_ids == encode(work.prefix_text + work.suffix_text)


def test_a_missing_peer_is_skipped_with_a_reason(tmp_path: Path) -> None:
    work = Workload([1, 2], "a b", [1], "a", [2], " b", new_tokens=2, runs=1)
    peers = [
        Contender("onnxruntime-genai", tmp_path / "no-such-folder", sys.executable),
        Contender("llama.cpp", tmp_path / "no.gguf", sys.executable),
    ]
    results = run_all(peers, work, threads=1, context=64, timeout_s=120)
    for result in results:
        assert result.skipped, result
        assert (
            "not installed" in result.skipped
            or "does not exist" in result.skipped
            or ("genai_config.json" in result.skipped)
        )


def _run_bench(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser()
    add_bench_command(parser.add_subparsers())
    args = parser.parse_args(["bench", "model", *argv])
    assert args.handler(args) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_bench_runs_on_the_tiny_model_and_prints_the_table(
    tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model", str(tiny_model.int4_dir), "--runs", "1", "--prompt-tokens", "16"]
    out = _run_bench([*argv, "--new-tokens", "8", "--json"], capsys)
    # The measured values, at full precision, from the JSON lines: a fast machine's
    # sub-millisecond TTFT is still a positive number there, whatever the table shows.
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    ours = next(r for r in results if r["engine"] == "edge-agent")
    assert (ours["prompt_tokens"], ours["new_tokens"]) == (16, 8)
    for key in ("prefill_tok_s", "decode_tok_s", "ttft_s", "ttft_cached_s", "peak_rss_mb"):
        assert ours[key] > 0, key
    assert ours["runs_peak_rss_mb"] > 0
    # The table shows every row; times never render as a bare zero.
    rows = {
        line.split("  ")[0].strip(): line.split()[-1] for line in out.splitlines() if "  " in line
    }
    assert rows["decode tok/s"] != "n/a"
    for label in ("TTFT ms", "TTFT long, cached prefix ms"):
        assert float(rows[label]) > 0, label


def test_times_keep_three_significant_digits_at_any_scale() -> None:
    assert significant(0.000412) == "0.000412"
    assert significant(0.0004) == "0.000400"
    assert significant(12.345) == "12.3"
    assert significant(1234.7) == "1235"  # whole numbers are never cut short
    assert significant(0.0) == "0"
    fast = _result("edge-agent", 10.0, 1000.0, ttft_uncached_s=4e-4, ttft_cached_s=1e-4)
    table = render_table([fast])
    row = next(line for line in table.splitlines() if line.startswith("TTFT long, cached"))
    assert row.split()[-1] == "0.100"  # 1e-4 s in ms, never 0.000


@pytest.mark.slow
def test_bench_through_the_real_cli(tiny_model: TinyModel) -> None:
    result = run_cli(
        "bench", "model", "--model", str(tiny_model.int4_dir), "--runs", "1",
        "--prompt-tokens", "16", "--new-tokens", "8", "--peers",
        "--peer-python", sys.executable,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "decode tok/s" in result.stdout
    assert "skipped onnxruntime-genai" in result.stdout


def test_ingest_and_broker_benchmarks_run_and_print_ratios(broker: object) -> None:
    ingest = run_cli("bench", "ingest", "--messages", "2000", "--repeats", "1")
    assert ingest.returncode == 0, ingest.stderr
    assert "vs json.loads" in ingest.stdout
    assert "parse+window+anomaly" in ingest.stdout
    through = run_cli("bench", "broker", "--messages", "2000")
    assert through.returncode == 0, through.stderr
    assert "publishes while the consumer receives (sustained)" in through.stdout
    rows = {
        name: line.removeprefix(name).split()
        for line in through.stdout.splitlines()
        for name in ("edge-agent transport+parse+window", "peer: plain paho + json.loads")
        if line.startswith(name)
    }
    assert len(rows) == 2, through.stdout
    for received, lost, dup, msgs_s, ratio, _during, _cpu, pub_msgs_s, _pub_cpu in rows.values():
        assert (received, lost, dup) == ("2,000", "0", "0")
        assert float(msgs_s.replace(",", "")) > 0
        assert float(pub_msgs_s.replace(",", "")) > 0
        assert ratio.endswith("x")
