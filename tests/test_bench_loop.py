"""``edge-agent bench loop``: an ask and a digest of the real agent, timed against 20 series."""

from __future__ import annotations

from tests.support.agent import run_cli


def test_bench_loop_times_an_ask_and_a_digest_against_twenty_series() -> None:
    done = run_cli("bench", "loop", "--series", "300", "--areas", "3", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["ask", "20", "series", "in"],
        ["digest", "20", "series", "in"],
        ["ask", "300", "series", "in"],
        ["digest", "300", "series", "in"],
    ]
    assert all("longest event-loop stall" in line for line in lines)
