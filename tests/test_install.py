"""deploy/install.sh: dry run, a real install into a --root tree, upgrade with rollback."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.broker import Broker

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "deploy" / "install.sh"
SCRIPTS = sorted((REPO / "deploy").glob("*.sh"))


def build_wheel(out: Path, version: str | None = None) -> Path:
    """The wheel of this checkout, optionally relabelled ``version`` (for upgrades)."""
    src = REPO
    if version is not None:
        src = out / f"src-{version}"
        shutil.copytree(REPO / "edge_agent", src / "edge_agent")
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        init = src / "edge_agent" / "__init__.py"
        init.write_text(
            re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text())
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src), "-w", str(out)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob(f"edge_agent-{version or '*'}-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return {v: build_wheel(out, v) for v in ("1.0.0", "1.1.0", "1.2.0")}


def new_root(tmp_path: Path) -> Path:
    """An empty image tree with just what a Debian root has that install.sh reads."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    shutil.copy("/etc/os-release", root / "etc" / "os-release")
    for name in ("passwd", "group"):
        (root / "etc" / name).touch()
    return root


def install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_shellcheck_clean(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck missing: deploy/ci-prereqs.sh installs it")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    root = new_root(tmp_path)
    before = tree(root)
    wheel = tmp_path / "edge_agent-9.9.9-py3-none-any.whl"
    wheel.touch()
    result = install("--dry-run", "--root", str(root), "--wheel", str(wheel))
    assert result.returncode == 0, result.stderr
    assert tree(root) == before
    out = result.stdout
    assert f"-m venv {root}/opt/edge-agent/venv-9.9.9" in out
    assert f"install {wheel}" in out.replace("--quiet ", "")
    assert f"ln -sfn venv-9.9.9 {root}/opt/edge-agent/current.new" in out
    assert f"config.example.toml {root}/etc/edge-agent/config.toml" in out
    assert f"systemctl --root={root} enable edge-agent.service" in out
    assert "skipped (--root): systemctl restart edge-agent.service" in out


def test_the_mosquitto_drop_in_is_planned_where_mosquitto_lives(tmp_path: Path) -> None:
    root = new_root(tmp_path)
    wheel = tmp_path / "edge_agent-9.9.9-py3-none-any.whl"
    wheel.touch()
    dest = root / "etc" / "mosquitto" / "conf.d" / "edge-agent.conf"
    # No Mosquitto here: nothing planned, a pointer to the docs instead.
    result = install("--dry-run", "--root", str(root), "--wheel", str(wheel))
    assert result.returncode == 0, result.stderr
    assert "see docs/delivery.md" in result.stdout
    assert str(dest) not in result.stdout

    dest.parent.mkdir(parents=True)
    result = install("--dry-run", "--root", str(root), "--wheel", str(wheel))
    assert result.returncode == 0, result.stderr
    assert f"install -m 0644 {REPO}/deploy/mosquitto/edge-agent.conf {dest}" in result.stdout
    assert "skipped (--root): systemctl reload mosquitto.service" in result.stdout
    assert not dest.exists()  # a dry run

    skipped = install(
        "--dry-run", "--root", str(root), "--wheel", str(wheel), "--no-mosquitto-conf"
    )
    assert skipped.returncode == 0, skipped.stderr
    assert "left alone (--no-mosquitto-conf)" in skipped.stdout
    assert "mosquitto/edge-agent.conf" not in skipped.stdout
    assert "reload mosquitto" not in skipped.stdout


def test_a_running_mosquitto_is_reloaded_after_the_drop_in(tmp_path: Path) -> None:
    root = new_root(tmp_path)
    (root / "etc" / "mosquitto" / "conf.d").mkdir(parents=True)
    wheel = tmp_path / "edge_agent-9.9.9-py3-none-any.whl"
    wheel.touch()
    log, health = tmp_path / "systemctl.log", tmp_path / "health"
    fake = tmp_path / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(log=log, health=health))
    fake.chmod(0o755)
    health.write_text("0")  # is-active: yes
    result = install(
        "--dry-run", "--root", str(root), "--wheel", str(wheel),
        env={"EDGE_AGENT_SYSTEMCTL": str(fake)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"+ {fake} reload mosquitto.service" in result.stdout
    assert "is-active --quiet mosquitto.service" in log.read_text()


def test_the_mosquitto_drop_in_loads_in_mosquitto(tmp_path: Path) -> None:
    """The shipped file is valid Mosquitto configuration (the broker refuses bad lines)."""
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    shutil.copy(REPO / "deploy" / "mosquitto" / "edge-agent.conf", conf_d)
    broker = Broker(tmp_path, extra_config=f"include_dir {conf_d}\n")
    broker.start()
    broker.stop()
    log = (tmp_path / "mosquitto.stderr").read_text() + (tmp_path / "mosquitto.log").read_text()
    assert f"Loading config file {conf_d}/edge-agent.conf" in log
    assert "Error" not in log, log


def test_jetson_with_python_310_gets_python_311_from_uv(tmp_path: Path) -> None:
    root = new_root(tmp_path)
    (root / "etc" / "nv_tegra_release").write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n"
    )
    # A PATH whose only python3 is JetPack 6's 3.10.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/bin", "/bin"):
        for tool in Path(directory).iterdir():
            if not tool.name.startswith("python") and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    fake = bin_dir / "python3"
    fake.write_text(
        '#!/bin/sh\ncase "$1" in -V|--version) echo "Python 3.10.12";; *) exit 1;; esac\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    wheel = tmp_path / "edge_agent-9.9.9-py3-none-any.whl"
    wheel.touch()
    result = install(
        "--dry-run", "--root", str(root), "--wheel", str(wheel), "--cuda",
        env={"PATH": str(bin_dir)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "NVIDIA Jetson (# R36 (release), REVISION: 3.0" in result.stdout
    assert "CUDAExecutionProvider" in result.stdout
    assert "the system has Python 3.10.12; edge-agent needs >= 3.11" in result.stdout
    assert f"{root}/opt/edge-agent/uv/bin/uv python install 3.11" in result.stdout
    assert "edge-agent.service.d/jetson-cuda.conf" in result.stdout


@pytest.mark.slow  # builds a venv with every dependency (~25 s)
def test_install_into_a_root_then_again_changes_nothing(tmp_path: Path, wheels) -> None:
    root = new_root(tmp_path)
    (root / "etc" / "mosquitto" / "conf.d").mkdir(parents=True)
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "manifest.json").write_text('{"files": {}}')
    first = install("--root", str(root), "--wheel", str(wheels["1.0.0"]), "--model", str(model))
    assert first.returncode == 0, first.stdout + first.stderr
    drop_in = root / "etc" / "mosquitto" / "conf.d" / "edge-agent.conf"
    assert drop_in.read_text() == (REPO / "deploy" / "mosquitto" / "edge-agent.conf").read_text()
    assert drop_in.stat().st_mode & 0o777 == 0o644

    prefix = root / "opt" / "edge-agent"
    assert os.readlink(prefix / "current") == "venv-1.0.0"
    version = subprocess.run(
        [prefix / "current" / "bin" / "edge-agent", "--version"], capture_output=True, text=True
    )
    assert version.stdout.strip() == "edge-agent 1.0.0"
    user = next(line for line in (root / "etc" / "passwd").read_text().splitlines()
                if line.startswith("edge-agent:"))  # fmt: skip
    uid, gid = (int(x) for x in user.split(":")[2:4])
    assert user.endswith(":/var/lib/edge-agent:/usr/sbin/nologin")
    config = root / "etc" / "edge-agent" / "config.toml"
    assert config.read_text() == (REPO / "deploy" / "config.example.toml").read_text()
    assert (config.stat().st_mode & 0o777, config.stat().st_gid) == (0o640, gid)
    state = root / "var" / "lib" / "edge-agent"
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (uid, 0o750)
    assert (state / "models" / "tiny" / "manifest.json").is_file()
    units = root / "etc" / "systemd" / "system"
    assert (units / "edge-agent.service").read_text() == (
        REPO / "systemd" / "edge-agent.service"
    ).read_text()
    assert (units / "edge-agent@.service").is_file()
    wants = units / "multi-user.target.wants" / "edge-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/edge-agent.service"
    assert not (units / "edge-agent.service.d").exists()  # no password file, no drop-in

    # The operator edits the config and adds a broker password; a rerun keeps the edit,
    # adds the credential drop-in and rebuilds nothing.
    config.write_text(config.read_text().replace('node_id = "edge-agent"', 'node_id = "pi-1"'))
    (root / "etc" / "edge-agent" / "mqtt-password").write_text("s3cret\n")
    second = install("--root", str(root), "--wheel", str(wheels["1.0.0"]), "--model", str(model))
    assert second.returncode == 0, second.stderr
    assert "already has edge-agent 1.0.0" in second.stdout
    assert "venv: building" not in second.stdout
    assert "left as it is" in second.stdout
    assert "is up to date" in second.stdout
    assert f"mosquitto: {drop_in} is up to date" in second.stdout
    assert 'node_id = "pi-1"' in config.read_text()
    assert (units / "edge-agent.service.d" / "mqtt-password.conf").is_file()

    removed = install("--root", str(root), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not drop_in.exists()
    assert not prefix.exists()
    assert not (units / "edge-agent.service").exists()
    assert not wants.exists()
    assert config.is_file()
    assert (state / "models" / "tiny").is_dir()
    assert "edge-agent:" in (root / "etc" / "passwd").read_text()

    purged = install("--root", str(root), "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not config.exists()
    assert not state.exists()
    assert "edge-agent:" not in (root / "etc" / "passwd").read_text()


FAKE_SYSTEMCTL = """#!/bin/sh
# Stands in for systemctl: logs every call; is-active answers from a file.
echo "$*" >> "{log}"
case "$1" in
    is-active) exit "$(cat "{health}")" ;;
esac
exit 0
"""


@pytest.mark.slow  # builds three venvs (~2 min)
def test_upgrade_waits_for_online_and_rolls_back_when_it_never_comes(
    tmp_path: Path, wheels, broker: Broker
) -> None:
    root = new_root(tmp_path)
    node = f"up-{uuid.uuid4().hex[:8]}"
    (root / "etc" / "edge-agent").mkdir()
    example = (REPO / "deploy" / "config.example.toml").read_text()
    (root / "etc" / "edge-agent" / "config.toml").write_text(
        example.replace('host = "127.0.0.1"', f'host = "{broker.host}"')
        .replace("port = 1883", f"port = {broker.port}")
        .replace('node_id = "edge-agent"', f'node_id = "{node}"')
    )
    log, health = tmp_path / "systemctl.log", tmp_path / "health"
    fake = tmp_path / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(log=log, health=health))
    fake.chmod(0o755)
    env = {"EDGE_AGENT_SYSTEMCTL": str(fake)}
    prefix = root / "opt" / "edge-agent"
    probe = broker.client()
    try:
        # 1.0.0 is live and its retained availability says online.
        health.write_text("0")
        probe.publish(f"edge-agent/{node}/availability", "online", retain=True)
        first = install("--root", str(root), "--wheel", str(wheels["1.0.0"]), env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "edge-agent 1.0.0 is healthy" in first.stdout

        upgraded = install("--root", str(root), "--wheel", str(wheels["1.1.0"]), env=env)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        assert os.readlink(prefix / "current") == "venv-1.1.0"
        assert (prefix / "venv-1.0.0").is_dir()  # kept as the rollback target
        assert "restart edge-agent.service" in log.read_text()

        # 1.2.0 never comes up: systemd keeps saying inactive and the broker says offline.
        health.write_text("3")
        probe.publish(f"edge-agent/{node}/availability", "offline", retain=True)
        failed = install(
            "--root", str(root), "--wheel", str(wheels["1.2.0"]), "--health-timeout", "3",
            env=env,
        )  # fmt: skip
        assert failed.returncode == 1
        assert "rolled back to venv-1.1.0" in failed.stderr
        assert os.readlink(prefix / "current") == "venv-1.1.0"
        assert sorted(p.name for p in prefix.glob("venv-*")) == [
            "venv-1.0.0", "venv-1.1.0", "venv-1.2.0"
        ]  # fmt: skip

        # Healthy again: the next upgrade prunes everything but live + previous.
        health.write_text("0")
        probe.publish(f"edge-agent/{node}/availability", "online", retain=True)
        retry = install("--root", str(root), "--wheel", str(wheels["1.2.0"]), env=env)
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert sorted(p.name for p in prefix.glob("venv-*")) == ["venv-1.1.0", "venv-1.2.0"]
    finally:
        probe.publish(f"edge-agent/{node}/availability", "", retain=True)
        probe.close()


def test_example_config_passes_config_check() -> None:
    # --schema-only: the example's model folder and outbox are the device's, not ours.
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", "--schema-only", "-c",
         str(REPO / "deploy" / "config.example.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"node_id": "edge-agent"' in result.stdout
