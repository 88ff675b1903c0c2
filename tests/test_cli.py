"""The CLI as a black box: config check, version, and start-up failures people can act on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent import __version__
from tests.support.agent import run_cli
from tests.support.broker import Broker, free_port


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"edge-agent {__version__}"


def test_config_check_lists_every_error_with_its_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[mqtt]\nport = 70000\nhots = "x"\n[summary]\nwindow_s = -1\n')
    result = run_cli("config", "check", "-c", str(config))
    assert result.returncode == 1
    assert "mqtt.port" in result.stderr
    assert "mqtt.hots: unknown key" in result.stderr
    assert "summary.window_s" in result.stderr


def test_config_check_masks_secrets_and_applies_env(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text('[mqtt]\nhost = "broker.lan"\npassword = "hunter2"\n')
    result = run_cli(
        "config", "check", "--schema-only", "-c", str(config),
        env={"EDGE_AGENT_MQTT__PORT": "8883"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["mqtt"]["host"] == "broker.lan"
    assert effective["mqtt"]["port"] == 8883
    assert effective["mqtt"]["password"] == "***"
    assert "hunter2" not in result.stdout


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[mqtt\n")
    result = run_cli("config", "check", "-c", str(config))
    assert result.returncode == 1
    assert str(config) in result.stderr
    assert "not valid TOML" in result.stderr


def test_run_refuses_a_missing_model_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    result = run_cli("run", env={"EDGE_AGENT_MODEL__PATH": str(missing)})
    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_run_reports_an_unreachable_broker(tiny_model, broker: Broker) -> None:
    port = free_port()  # nothing listens here
    result = run_cli(
        "run",
        env={
            "EDGE_AGENT_MODEL__PATH": str(tiny_model.int4_dir),
            "EDGE_AGENT_MQTT__PORT": str(port),
        },
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "mqtt.host" in result.stderr
    assert "Traceback" not in result.stderr
