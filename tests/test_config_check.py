"""``edge-agent config check`` checks what the config points at, one line per problem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.demo.broker import free_port
from edge_agent.export.folder import write_manifest
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.manifest import Manifest
from tests.support.broker import Broker


def _check(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def _write(tmp_path: Path, model: Path, mqtt: str = "", port: int = 1883) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        f'outbox_path = "{tmp_path}/state/outbox.sqlite"\n{mqtt}\n'
        f'[model]\npath = "{model}"\n'
    )
    return path


def _problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()


@pytest.fixture
def model(tiny_model: TinyModel, tmp_path: Path) -> Path:
    """A private copy of the tiny int4 folder, free to break."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model.int4_dir, folder)
    (folder / ".verified").unlink(missing_ok=True)
    return folder


def test_a_good_config_passes_and_prints_the_effective_config(model: Path, tmp_path: Path) -> None:
    result = _check(_write(tmp_path, model), "--deep")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"]["path"] == str(model)
    assert not (tmp_path / "state").exists()  # checking created nothing


def test_a_missing_model_folder_is_one_line(tmp_path: Path) -> None:
    (line,) = _problems(_check(_write(tmp_path, tmp_path / "nowhere")))
    assert line.startswith(f"edge-agent: model.path {tmp_path / 'nowhere'}: ")
    assert "does not exist" in line


def test_a_missing_or_empty_model_file_is_found_without_hashing(
    model: Path, tmp_path: Path
) -> None:
    (model / "tokenizer.json").unlink()
    (model / "model.onnx.data").write_bytes(b"")
    problems = _problems(_check(_write(tmp_path, model)))
    assert len(problems) == 2, problems
    assert "model.onnx.data is empty" in problems[0]
    assert "tokenizer.json is listed in manifest.json but missing" in problems[1]


def test_a_corrupt_model_file_needs_deep(model: Path, tmp_path: Path) -> None:
    data = model / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, different bytes: only a checksum sees it
    data.write_bytes(bytes(raw))
    config = _write(tmp_path, model)
    assert _check(config).returncode == 0
    (line,) = _problems(_check(config, "--deep"))
    assert "model.onnx.data" in line
    assert "failed its checksum" in line


@pytest.fixture
def sized(model: Path) -> Path:
    """The private copy with a manifest that records sizes (as every export now writes)."""
    manifest = write_manifest(model, Manifest.from_dir(model))
    assert manifest.sizes["model.onnx.data"] == (model / "model.onnx.data").stat().st_size
    return model


def test_a_truncated_weights_file_is_found_by_its_size_without_hashing(
    sized: Path, tmp_path: Path
) -> None:
    data = sized / "model.onnx.data"
    full = data.stat().st_size
    with data.open("r+b") as fh:
        fh.truncate(full // 2)  # a copy that stopped half way
    config = _write(tmp_path, sized)
    (line,) = _problems(_check(config))
    assert line.startswith(f"edge-agent: model.path {sized}: ")
    assert f"model.onnx.data is {full // 2} bytes, manifest says {full}: truncated" in line
    assert "copy the folder again" in line
    # --deep says the same (the size before the hash), still one line.
    (deep,) = _problems(_check(config, "--deep"))
    assert "model.onnx.data" in deep
    assert "truncated" in deep


def test_a_sized_folder_passes_and_an_old_manifest_without_sizes_still_passes(
    sized: Path, tmp_path: Path
) -> None:
    config = _write(tmp_path, sized)
    assert _check(config, "--deep").returncode == 0
    raw = json.loads((sized / "manifest.json").read_text())
    del raw["sizes"]  # a folder exported before sizes were recorded
    (sized / "manifest.json").write_text(json.dumps(raw))
    result = _check(config, "--deep")
    assert result.returncode == 0, result.stderr
    # Without sizes a same-name file of another length is only caught by the checksum.
    with (sized / "tokenizer_config.json").open("ab") as fh:
        fh.write(b" ")
    assert _check(config).returncode == 0
    (line,) = _problems(_check(config, "--deep"))
    assert "tokenizer_config.json" in line
    assert "failed its checksum" in line


def test_an_unreadable_password_file_and_an_unwritable_outbox(model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[mqtt]\nusername = "agent"\npassword_file = "{tmp_path}/missing-password"\n'
        f'outbox_path = "{blocker}/outbox.sqlite"\n[model]\npath = "{model}"\n'
    )
    problems = _problems(_check(config))
    assert len(problems) == 2, problems
    assert f"mqtt.password_file {tmp_path}/missing-password cannot be read" in problems[0]
    assert f"mqtt.outbox_path {blocker}/outbox.sqlite" in problems[1]
    # A relative password file is systemd's credential: found at run time only.
    config.write_text(config.read_text().replace(f"{tmp_path}/missing-password", "mqtt-pw"))
    assert len(_problems(_check(config))) == 1
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt-pw").write_text("s3cret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    assert len(_problems(_check(config, env=env))) == 1
    (tmp_path / "creds" / "mqtt-pw").unlink()
    assert len(_problems(_check(config, env=env))) == 2


def test_connect_tries_the_broker(broker: Broker, model: Path, tmp_path: Path) -> None:
    good = _check(_write(tmp_path, model, port=broker.port), "--connect")
    assert good.returncode == 0, good.stderr
    port = free_port()
    (line,) = _problems(_check(_write(tmp_path, model, port=port), "--connect", "--timeout", "2"))
    assert f"cannot reach the MQTT broker at 127.0.0.1:{port}" in line
    # Without --connect the broker is not contacted.
    assert _check(_write(tmp_path, model, port=port)).returncode == 0


def test_schema_only_checks_the_settings_alone(tmp_path: Path) -> None:
    result = _check(_write(tmp_path, tmp_path / "nowhere"), "--schema-only")
    assert result.returncode == 0, result.stderr


def test_run_refuses_a_truncated_weights_file_before_loading(sized: Path, tmp_path: Path) -> None:
    data = sized / "model.onnx.data"
    with data.open("r+b") as fh:
        fh.truncate(1000)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "-c", str(_write(tmp_path, sized))],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "model.onnx.data is 1000 bytes" in result.stderr
    assert "model_loaded" not in result.stderr + result.stdout
