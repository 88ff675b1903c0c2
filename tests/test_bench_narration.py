"""``edge-agent bench narration``: seeded and real windows, judged by an independent scorer."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest

from edge_agent.bench.narration import (
    DEFAULT_DATA,
    SHAPES,
    real_cases,
    render,
    run_cases,
    synthetic_cases,
)
from edge_agent.cli.bench import add_bench_command
from edge_agent.errors import ConfigError
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import Generation, GenerationRequest
from tests.support.agent import run_cli


class Silent:
    """A generator that writes nothing: every window is published as its fallback."""

    model_id = "silent"
    prompt_format: Literal["chat", "completion"] = "completion"
    context_length = 4096

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render(self, user: str) -> str:
        return user

    def generate(self, request: GenerationRequest) -> Generation:
        return Generation("", 10, 0, "eos", 0.0)


def test_the_windows_are_fixed_by_the_seed_and_cover_every_shape() -> None:
    first, again = synthetic_cases(3, seed=1), synthetic_cases(3, seed=1)
    other = synthetic_cases(3, seed=2)
    assert first == again
    assert first != other
    assert [c.shape for c in first] == list(SHAPES) * 3
    for case in first:
        assert all(f.area == case.area for f in case.facts)
        for exc in case.excursions:
            assert exc.open
            assert exc.peak >= exc.last > exc.limit


def test_every_synthetic_fallback_is_true_and_states_the_top_finding() -> None:
    result = run_cases(Silent(), synthetic_cases(6))
    for shape, tally in result.tallies.items():
        assert tally.role_errors == 0, (shape, tally.examples)
        assert tally.recalled == tally.total, (shape, tally.examples)
        assert tally.bad_titles == 0, (shape, tally.examples)
        assert tally.reasons == {"empty": tally.total}
    assert "all " in render(result)


@pytest.mark.skipif(
    not DEFAULT_DATA.is_file(),
    reason=f"the real data {DEFAULT_DATA} (../shared/data/uci-occupancy) is absent in this clone",
)
def test_real_windows_replayed_through_the_ingest_give_true_fallbacks() -> None:
    todo = real_cases(DEFAULT_DATA, 60)
    assert len(todo) == 60
    result = run_cases(Silent(), todo)
    shapes = set(result.tallies)
    # Real windows differ: arrivals and departures, lights, quiet nights.
    assert "uci office: quiet" in shapes
    assert len(shapes) >= 3, shapes
    for shape, tally in result.tallies.items():
        assert tally.role_errors == 0, (shape, tally.examples)
        assert tally.recalled == tally.total, (shape, tally.examples)
        assert tally.bad_titles == 0, (shape, tally.examples)


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
        "--real-windows", "0", "--max-new-tokens", "8", "--show",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for shape in SHAPES:
        assert shape in result.stdout
    assert "role err" in result.stdout
    assert "all " in result.stdout
