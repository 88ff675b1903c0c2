"""The Ansible role: lint, and a real run into a debootstrapped Debian root over chroot."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ANSIBLE = REPO / "deploy" / "ansible"


def ansible_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "ANSIBLE_"))}
    # This machine's pip settings point at local folders the device root does not have;
    # keep only what works in there (the CA bundle make-rootfs.sh copied in, the timeout).
    env |= {
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
        "PIP_DEFAULT_TIMEOUT": "180",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return env


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} missing: deploy/ci-prereqs.sh installs it")


def test_playbook_syntax_check() -> None:
    need("ansible-playbook")
    result = subprocess.run(
        ["ansible-playbook", "--syntax-check", "site.yml"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=120,
        env=ansible_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    need("ansible-lint")
    result = subprocess.run(
        ["ansible-lint", "--nocolor", "--profile", "production"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=300,
        env=ansible_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def make_model(folder: Path) -> dict[str, str]:
    """A model-shaped folder with a manifest of sha256 sums (the role only copies files)."""
    folder.mkdir()
    files = {"model.onnx": os.urandom(4096), "tokenizer.json": b'{"version": "1.0"}'}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    (folder / "manifest.json").write_text(json.dumps({"files": sums}))
    return sums


def playbook(inventory: Path, extra: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "-e", f"@{extra}", "site.yml"],
        cwd=ANSIBLE,
        capture_output=True,
        text=True,
        timeout=1200,
        env=ansible_env(),
    )


def recap(output: str) -> dict[str, int]:
    match = re.search(r"testdevice\s*:\s*(ok=.*)", output)
    assert match, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Debian bookworm root (minbase + python3-venv + systemd), from the cache."""
    need("debootstrap")
    if os.geteuid() != 0:
        pytest.fail("the chroot deploy test needs root (CI runs as root)")
    root = tmp_path_factory.mktemp("device") / "root"
    subprocess.run(
        [REPO / "deploy" / "make-rootfs.sh", "amd64", root, "systemd"],
        check=True,
        timeout=1800,
        stdout=subprocess.DEVNULL,
    )
    return root


@pytest.mark.slow
def test_role_deploys_into_a_debian_root_and_a_second_run_changes_nothing(
    device: Path, tmp_path: Path
) -> None:
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", wheel_dir],
        check=True,
        timeout=300,
    )
    (wheel,) = wheel_dir.glob("edge_agent-*.whl")
    version = wheel.name.split("-")[1]
    sums = make_model(tmp_path / "tiny-int4")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "edge_agents:\n  hosts:\n    testdevice:\n"
        "      ansible_connection: community.general.chroot\n"
        f"      ansible_host: {device}\n"
    )
    extra = tmp_path / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "edge_agent_wheel": str(wheel),
                "edge_agent_model_src": str(tmp_path / "tiny-int4"),
                "edge_agent_node_id": "chroot-1",
                "edge_agent_mqtt_host": "broker.home.arpa",
                "edge_agent_mqtt_username": "edge",
                "edge_agent_mqtt_password": "s3cret",
                "edge_agent_subscriptions": [
                    {"topic": "zigbee2mqtt/#", "adapter": "zigbee2mqtt", "area": "kitchen",
                     "device_areas": {"hall motion": "hallway"}},
                    {"topic": "tele/+/SENSOR", "adapter": "tasmota"},
                ],
                # No broker and no running systemd in a chroot: the gate needs both.
                "edge_agent_health_check": False,
            }
        )
    )  # fmt: skip

    first = playbook(inventory, extra)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    assert recap(first.stdout)["failed"] == 0

    passwd = (device / "etc" / "passwd").read_text()
    user = re.search(r"^edge-agent:x:(\d+):(\d+):[^:]*:/var/lib/edge-agent:/usr/sbin/nologin$",
                     passwd, re.MULTILINE)  # fmt: skip
    assert user, passwd
    assert os.readlink(device / "opt/edge-agent/current") == f"venv-{version}"
    in_root = subprocess.run(
        ["chroot", device, "/opt/edge-agent/current/bin/edge-agent", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert in_root.stdout.strip() == f"edge-agent {version}", in_root.stderr
    config = (device / "etc/edge-agent/config.toml").read_text()
    assert 'node_id = "chroot-1"' in config
    assert 'device_areas = { "hall motion" = "hallway" }' in config
    assert 'path = "/var/lib/edge-agent/models/tiny-int4"' in config
    assert "s3cret" not in config
    secret = device / "etc/edge-agent/mqtt-password"
    assert secret.read_text() == "s3cret\n"
    assert secret.stat().st_mode & 0o777 == 0o600
    units = device / "etc/systemd/system"
    assert (units / "edge-agent.service").read_bytes() == (
        REPO / "systemd/edge-agent.service"
    ).read_bytes()
    assert (units / "edge-agent.service.d/mqtt-password.conf").is_file()
    assert not (units / "edge-agent.service.d/jetson-cuda.conf").exists()
    wants = units / "multi-user.target.wants/edge-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/edge-agent.service"
    models = device / "var/lib/edge-agent/models/tiny-int4"
    for name, digest in sums.items():
        assert hashlib.sha256((models / name).read_bytes()).hexdigest() == digest

    second = playbook(inventory, extra)
    assert second.returncode == 0, second.stdout[-6000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-6000:]

    # A model file that does not match its manifest stops the rollout on that device.
    (tmp_path / "tiny-int4" / "model.onnx").write_bytes(b"tampered")
    tampered = playbook(inventory, extra)
    assert tampered.returncode != 0
    assert "model.onnx: sha256 on the device does not match the manifest" in tampered.stdout
