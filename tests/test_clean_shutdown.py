"""A clean shutdown logs no warnings or errors, even with a generation in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.export.tiny import TinyModel
from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker, Probe

pytestmark = pytest.mark.slow


def _loud(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("level") in ("warning", "error", "critical")]


def test_the_demo_ends_without_warnings_while_summaries_stream(tiny_model: TinyModel) -> None:
    # Summaries every 0.5 s with room for 1,000 tokens: when the duration ends, one is
    # being generated and streamed from the inference thread (the case that logged
    # text_sink_failed: RuntimeError('Event loop is closed')).
    result = subprocess.run(
        [
            sys.executable, "-m", "edge_agent", "demo", "--no-ui",
            "--model", str(tiny_model.int4_dir), "--speed", "2880", "--interval", "0.5",
            "--max-new-tokens", "1000", "--threads", "1", "--duration", "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [line for line in result.stdout.splitlines() if '"kind": "summary"' in line]
    assert summaries, result.stdout[-3000:]
    # The demo logs at warning level as JSON lines on stderr: any line is a complaint.
    assert result.stderr.strip() == "", result.stderr[-3000:]


def test_sigterm_during_a_long_generation_logs_no_warnings(
    broker: Broker, probe: Probe, tiny_model: TinyModel, tmp_path: Path
) -> None:
    config, node = write_config(
        tmp_path, broker, tiny_model.int4_dir, interval_s=0.3, window_s=600,
        max_new_tokens=1000, deadline_s=60,
    )  # fmt: skip
    probe.subscribe(f"edge-agent/{node}/#")
    agent = start_agent(config)
    try:
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)
        probe.publish("zigbee2mqtt/hall", json.dumps({"temperature": 21.0}))
        # Streamed pieces show a generation is running right now.
        probe.wait_for(f"edge-agent/{node}/summary/stream", timeout=60)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    lines = [json.loads(line) for line in config.with_suffix(".log").read_text().splitlines()]
    events = [line["event"] for line in lines]
    assert "agent_stopped" in events
    assert _loud(lines) == [], _loud(lines)
