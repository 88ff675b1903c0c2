"""A real Home Assistant process with the MQTT integration on the test's broker.

It runs from the cached Home Assistant venv (built by ``tests/test_ha_validate.py``'s
``ha_venv``, under a file lock) with :mod:`tests.support.hass_driver`: HA's own runner and
bootstrap, its HTTP server on a free loopback port, and an MQTT config entry pointing at
the broker, so discovery goes through HA's real MQTT client, discovery code, entity and
device registries and template engine. The test reads HA's log file and asks the driver
for snapshots of the registries and states.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from edge_agent.demo.broker import free_port

DRIVER = Path(__file__).with_name("hass_driver.py")
PREFIX = "@@hass "
LOG_LINE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")

Snapshot = dict[str, Any]


def _config_entry(host: str, port: int) -> dict[str, Any]:
    """An MQTT config entry as HA 2025.4 stores it (``.storage/core.config_entries``)."""
    now = datetime.now(UTC).isoformat()
    return {
        "created_at": now,
        "data": {"broker": host, "port": port},
        "disabled_by": None,
        "discovery_keys": {},
        "domain": "mqtt",
        "entry_id": uuid.uuid4().hex,
        "minor_version": 2,
        "modified_at": now,
        "options": {"discovery": True, "discovery_prefix": "homeassistant"},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "subentries": [],
        "title": host,
        "unique_id": None,
        "version": 1,
    }


def with_frontend(venv: Path) -> Path:
    """``venv`` with the frontend package installed (once, under the venv's build lock).

    Home Assistant starts in recovery mode, without the MQTT integration, when its
    frontend does not load; the validation test does not need it, so the venv lacks it.
    """
    python = str(venv / "bin" / "python")
    probe = [python, "-c", "import hass_frontend"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return venv
    manifest = "homeassistant/components/frontend/manifest.json"
    requirement = subprocess.run(
        [python, "-c", f"import json, homeassistant, pathlib; print(json.loads((pathlib.Path("
         f"homeassistant.__file__).parents[1] / '{manifest}').read_text())['requirements'][0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(probe, capture_output=True).returncode != 0:
            install = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*install, requirement], check=True, timeout=1800)
    return venv


class HomeAssistant:
    """One Home Assistant process; :meth:`start`, :meth:`snapshot`, :meth:`stop`."""

    def __init__(self, venv: Path, config_dir: Path, broker_host: str, broker_port: int) -> None:
        self.venv = venv
        self.config_dir = config_dir
        self.log_file = config_dir / "home-assistant.log"
        self._broker = (broker_host, broker_port)
        self._proc: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def start(self, timeout_s: float = 300.0) -> None:
        """Write the config, start HA and wait until it has started and MQTT is connected."""
        storage = self.config_dir / ".storage"
        storage.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n  name: edge-agent test\n  latitude: 0\n  longitude: 0\n"
            "  elevation: 0\n  unit_system: metric\n  time_zone: UTC\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {free_port()}\n"
            # INFO shows what MQTT discovery did ("Removing component: ...").
            "logger:\n  default: info\n"
        )
        (storage / "core.config_entries").write_text(
            json.dumps(
                {
                    "version": 1,
                    "minor_version": 5,
                    "key": "core.config_entries",
                    "data": {"entries": [_config_entry(*self._broker)]},
                }
            )
        )
        self._proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "python"),
                str(DRIVER),
                str(self.config_dir),
                str(self.log_file),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the same lines go to the log file
            text=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
        assert self._proc.stdout is not None
        threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True).start()
        started = self._answer(timeout_s)
        assert started == {"event": "started"}, started
        self.wait_until(lambda s: s["mqtt_connected"], timeout_s=60, what="MQTT connected")

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            if line.startswith(PREFIX):
                self._answers.put(json.loads(line.removeprefix(PREFIX)))
        self._answers.put(None)  # the process has ended

    def _answer(self, timeout_s: float) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"Home Assistant did not answer within {timeout_s}s") from None
        if answer is None:
            tail = "\n".join(self.log_lines()[-30:])
            raise AssertionError(f"Home Assistant exited; its log ends:\n{tail}")
        return answer

    def snapshot(self, timeout_s: float = 30.0) -> Snapshot:
        """The MQTT entities and devices, every state, and MQTT discovery's bookkeeping."""
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write('{"cmd": "snapshot"}\n')
        self._proc.stdin.flush()
        return self._answer(timeout_s)

    def wait_until(
        self, predicate: Callable[[Snapshot], bool], *, timeout_s: float, what: str
    ) -> Snapshot:
        """The first snapshot that satisfies ``predicate``; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            if time.monotonic() > deadline:
                raise AssertionError(f"Home Assistant: not {what} within {timeout_s}s: {snap}")
            time.sleep(0.5)

    def wait_for_log(
        self,
        predicate: Callable[[str], bool],
        *,
        count: int = 1,
        since: int = 0,
        timeout_s: float = 60,
    ) -> list[str]:
        """Wait until ``count`` log entries after entry ``since`` satisfy ``predicate``."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [e for e in self.log_lines()[since:] if predicate(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"Home Assistant logged {len(found)} of {count} entries")
            time.sleep(0.2)

    def log_lines(self) -> list[str]:
        """HA's log file, one entry per element (a traceback stays with its line)."""
        if not self.log_file.exists():
            return []
        entries: list[str] = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            if LOG_LINE.match(line) or not entries:
                entries.append(line)
            else:
                entries[-1] += "\n" + line
        return entries

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask HA to stop; kill it if it does not."""
        if self._proc is None:
            return
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write('{"cmd": "stop"}\n')
            self._proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None


def problems(entries: list[str]) -> list[str]:
    """The WARNING and worse entries of a log excerpt."""
    return [e for e in entries if (m := LOG_LINE.match(e)) and m.group(1) not in ("DEBUG", "INFO")]
