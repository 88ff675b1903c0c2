"""``edge-agent bench narration``: seeded windows of every shape, tallied by the real check."""

from __future__ import annotations

import argparse

import pytest

from edge_agent.bench.narration import SHAPES, cases
from edge_agent.cli.bench import add_bench_command
from edge_agent.errors import ConfigError
from edge_agent.export.tiny import TinyModel
from tests.support.agent import run_cli


def test_the_windows_are_fixed_by_the_seed_and_cover_every_shape() -> None:
    first, again, other = cases(3, seed=1), cases(3, seed=1), cases(3, seed=2)
    assert first == again
    assert first != other
    assert [c.shape for c in first] == list(SHAPES) * 3
    for case in first:
        assert all(f.area == f.device.split("/")[0] for f in case.facts)
        for alert in case.anomalies:
            # An alert is about a reading of the window, past its limit.
            assert alert.threshold is not None
            assert alert.value > alert.threshold
            assert any(f.metric == alert.metric and f.last == alert.value for f in case.facts)


def test_zero_windows_are_refused_before_loading_anything() -> None:
    parser = argparse.ArgumentParser(prog="edge-agent")
    add_bench_command(parser.add_subparsers(required=True))
    args = parser.parse_args(["bench", "narration", "--model", "/nonexistent", "--windows", "0"])
    with pytest.raises(ConfigError, match="--windows"):
        args.handler(args)


@pytest.mark.slow
def test_through_the_real_cli(tiny_model: TinyModel) -> None:
    # Random weights write gibberish, so only the report's shape is checked here; the
    # floor on the real model is in tests/test_gemma3.py.
    result = run_cli(
        "bench", "narration", "--model", str(tiny_model.int4_dir), "--windows", "2",
        "--max-new-tokens", "8", "--show",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for shape in SHAPES:
        assert shape in result.stdout
    assert "/2 " in result.stdout
    assert "all " in result.stdout
    assert "/8 " in result.stdout
