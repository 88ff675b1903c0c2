"""Run the real ``edge-agent`` CLI as a subprocess against the test broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from edge_agent.demo.broker import LocalMosquitto


def write_config(
    tmp_path: Path,
    broker: LocalMosquitto,
    model_dir: Path,
    extra: str = "",
    mqtt_extra: str = "",
    **summary: float,
) -> tuple[Path, str]:
    """A config for one agent with a unique node id; returns (path, node_id)."""
    node_id = f"test-{uuid.uuid4().hex[:8]}"
    summary_lines = "\n".join(f"{k} = {v}" for k, v in summary.items())
    path = tmp_path / f"{node_id}.toml"
    path.write_text(
        f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
node_id = "{node_id}"
outbox_path = "{tmp_path}/{node_id}-outbox.sqlite"
{mqtt_extra}

[model]
path = "{model_dir}"
threads = 1

[summary]
{summary_lines}

[log]
format = "json"
level = "debug"
{extra}
"""
    )
    return path, node_id


def start_agent(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``python -m edge_agent run -c CONFIG`` with its output captured to a file."""
    with config.with_suffix(".log").open("w") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "-c", str(config), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )


def stop_agent(agent: subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM a still-running agent, SIGKILL it if it has not exited by ``timeout``."""
    if agent.poll() is None:
        agent.terminate()
        try:
            agent.wait(timeout)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
