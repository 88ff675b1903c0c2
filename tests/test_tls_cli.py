"""TLS problems through the real CLI: one line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.test_transport_tls import TlsBroker, tls_broker

__all__ = ["tls_broker"]  # the module fixture: a Mosquitto with a TLS listener


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _config(tmp_path: Path, port: int, tls: str, model: Path | None = None) -> Path:
    node = f"tls-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{node}.toml"
    path.write_text(
        f'[mqtt]\nhost = "localhost"\nport = {port}\nnode_id = "{node}"\n'
        f'outbox_path = "{tmp_path}/outbox.sqlite"\n'
        f"{tls}\n"
        f'[model]\npath = "{model or tmp_path / "no-model"}"\n'
    )
    return path


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _tls(broker: TlsBroker, ca: Path | str) -> str:
    return (
        f'[mqtt.tls]\nenabled = true\nca_file = "{ca}"\n'
        f'cert_file = "{broker.dir}/client.pem"\nkey_file = "{broker.dir}/client.key"\n'
    )


@pytest.mark.parametrize("problem", ["missing", "not_pem"])
def test_run_with_a_bad_ca_file_fails_in_one_line(
    tls_broker: TlsBroker, tmp_path: Path, problem: str
) -> None:
    ca = tmp_path / "ca.pem"
    if problem == "not_pem":
        ca.write_text("this is not a certificate\n")
    config = _config(tmp_path, tls_broker.port, _tls(tls_broker, ca))
    result = _cli("run", "-c", str(config))
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert f"mqtt.tls.ca_file {ca}" in line
    assert ("does not exist" if problem == "missing" else "not a valid PEM file") in line


def test_a_key_that_does_not_match_or_parse_is_one_line(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    tls = _tls(tls_broker, tls_broker.dir / "ca.pem").replace("client.key", "server.pem")
    result = _cli("run", "-c", str(_config(tmp_path, tls_broker.port, tls)))
    assert result.returncode == 1
    assert "mqtt.tls.cert_file" in _one_line(result.stderr)


def test_plain_mqtt_to_a_tls_port_suggests_enabling_tls(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    config = _config(tmp_path, tls_broker.port, "")
    result = _cli("config", "check", "-c", str(config), "--schema-only")
    assert result.returncode == 0, result.stderr
    result = _cli("config", "check", "-c", str(config), "--connect", "--timeout", "5")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert "set mqtt.tls.enabled = true" in line, result.stderr
    assert "Unspecified error" not in line.split(";")[1]


def test_tls_to_a_plain_port_suggests_turning_it_off(
    broker: Broker, tls_broker: TlsBroker, tmp_path: Path
) -> None:
    config = _config(tmp_path, broker.port, _tls(tls_broker, tls_broker.dir / "ca.pem"))
    result = _cli("config", "check", "-c", str(config), "--connect", "--schema-only")
    assert result.returncode == 0  # --schema-only skips files and the broker
    result = _cli("config", "check", "-c", str(config), "--connect")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "TLS handshake" in line, result.stderr
    assert "mqtt.tls.enabled = false" in line, result.stderr


def test_config_check_connect_and_ha_remove_work_over_tls(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    config = _config(tmp_path, tls_broker.port, _tls(tls_broker, tls_broker.dir / "ca.pem"))
    result = _cli("config", "check", "-c", str(config), "--connect", "--schema-only")
    assert result.returncode == 0, result.stderr
    # The model folder is missing, but the broker check over TLS passed: one problem.
    result = _cli("config", "check", "-c", str(config), "--connect")
    assert result.returncode == 1
    assert "model.path" in _one_line(result.stderr)
    result = _cli("ha", "remove", "-c", str(config), "--sweep-s", "0.2", "--settle-s", "0")
    assert result.returncode == 0, result.stderr
    assert "retained topics cleared" in result.stdout
