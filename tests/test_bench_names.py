"""``edge-agent bench names`` end to end: a real broker, the real agent on the tiny model,
distinct device names published, asks answered before and after. Figures are printed,
not asserted; what is checked is that every ask got its answer and the caps held."""

from __future__ import annotations

import re

import pytest

from edge_agent.export.tiny import TinyModel
from tests.support.agent import run_cli

pytestmark = pytest.mark.slow


def test_bench_names_answers_every_ask_and_keeps_the_series_cap(tiny_model: TinyModel) -> None:
    done = run_cli(
        "bench", "names", "--model", str(tiny_model.int4_dir), "--count", "1500", "--asks", "2"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"ask round trip before: median [\d.]+ ms", out), out
    assert re.search(r"ask round trip after: +median [\d.]+ ms", out), out
    assert re.search(r"agent RSS: [\d.]+ -> [\d.]+ MiB", out), out
    status = dict(re.findall(r"(\w+)=(\d+)", out.splitlines()[-1]))
    # 1,500 names against the default cap of 1,000 devices: the rest are refused, counted.
    assert int(status["series_total"]) <= 5000
    assert int(status["series_refused_total"]) > 0
