"""``edge-agent bench actions``: the report's shape and arithmetic on the tiny model.

No speed is asserted: only that every measure is there, that the percentages are the
ratios of the measures printed beside them, and that merging states saves memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import pytest
import structlog

from edge_agent.actions.policy import Policy
from edge_agent.cli.bench import add_bench_command
from edge_agent.errors import ConfigError
from edge_agent.export.tiny import TinyModel
from tests.support.agent import run_cli

ROWS = (
    "unconstrained decode step",
    "constraint per token, cold masks",
    "constraint per token, warm masks",
    "cold, % of an unconstrained step",
    "warm, % of an unconstrained step",
    "mask warm-up (all states)",
    "mask memory",
)


def bench(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-agent")
    add_bench_command(parser.add_subparsers(required=True))
    return parser.parse_args(["bench", "actions", *argv])


@pytest.fixture(autouse=True)
def _logging_stays_in_this_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The handlers run in-process here. The command's own logging set-up (warning level,
    loggers cached on first use) would outlive the test and hide info events from later
    tests' ``capture_logs``; log to stderr, uncached, and restore the defaults after."""

    def to_stderr(*_args: object, **_kwargs: object) -> None:
        structlog.configure(
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=False,
        )

    monkeypatch.setattr("edge_agent.logs.configure_logging", to_stderr)
    yield
    structlog.reset_defaults()


@pytest.mark.slow
def test_one_round_reports_ratios_of_its_own_measures(
    tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.actions.bench import REASON_MAX, SPECS

    args = bench("--model", str(tiny_model.int4_dir), "--runs", "1", "--new-tokens", "48", "--json")
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    doc = json.loads(out.splitlines()[0])
    for name in ("cold", "warm"):
        ms, pct = doc[f"{name}_ms"]["median"], doc[f"{name}_pct"]["median"]
        assert pct == pytest.approx(100 * ms / doc["step_ms"]["median"])
    assert doc["states"] < doc["states_unmerged"]
    assert 0 < doc["mask_bytes"] < doc["mask_bytes_unmerged"]
    assert doc["constrained_tokens"] > 0
    # The constrained output is a proposal the policy can read (or a budget-cut prefix).
    if doc["output"].endswith("}"):
        _, verdict = Policy(SPECS, reason_max=REASON_MAX).shape(json.loads(doc["output"]))
        assert verdict.ok, verdict
    for row in ROWS:
        assert row in out, row


def test_bad_options_are_refused_before_loading_anything() -> None:
    args = bench("--model", "/nonexistent", "--runs", "0")
    with pytest.raises(ConfigError, match="--runs"):
        args.handler(args)


@pytest.mark.slow
def test_through_the_real_cli(tiny_model: TinyModel) -> None:
    result = run_cli(
        "bench", "actions", "--model", str(tiny_model.int4_dir), "--runs", "1",
        "--new-tokens", "32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for row in ROWS:
        assert row in result.stdout, row


@pytest.mark.slow
def test_the_proposal_share_counts_every_window(
    tiny_model: TinyModel, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--windows``: a third carry a CO2 alert, a third another alert; one outcome each."""
    from edge_agent.actions.bench_share import bench_share

    result = bench_share(tiny_model.int4_dir, windows=4, seed=3, threads=1, new_tokens=48)
    assert (result.alert_windows, result.calm_windows, result.other_windows) == (2, 1, 1)
    assert [o.alert for o in result.outcomes] == [True, False, False, True]
    assert [o.other for o in result.outcomes] == [False, False, True, False]
    allowed = {"ventilate", "heat", "none", "invalid"}
    assert all(o.action in allowed for o in result.outcomes)
    assert result.alert_proposed == sum(o.action == "ventilate" for o in result.outcomes[::3])
    args = bench("--model", str(tiny_model.int4_dir), "--windows", "3", "--new-tokens", "32")
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "CO2 alert -> ventilate proposal:" in out
    assert "calm CO2  -> no action:" in out
