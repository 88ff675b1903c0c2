"""sd_notify: the client against a real AF_UNIX datagram socket, and the real service."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.sdnotify import notify, watchdog_interval
from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's notify socket."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def _receive_until(sock: socket.socket, wanted: str, timeout: float) -> list[str]:
    """Every datagram received until one contains the line ``wanted``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in seen[-1].splitlines():
            return seen
    raise AssertionError(f"{wanted!r} not received within {timeout}s; got {seen!r}")


def test_notify_sends_the_state_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("READY=1\nSTATUS=model loaded", env={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=model loaded"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        assert notify("WATCHDOG=1", env={"NOTIFY_SOCKET": f"@{name}"})
        assert sock.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize("value", ["", "vsock:2:1234", "relative/path"])
def test_notify_without_a_usable_socket_is_a_quiet_no(value: str) -> None:
    assert notify("READY=1", env={"NOTIFY_SOCKET": value}) is False


def test_notify_to_a_missing_socket_returns_false(tmp_path: Path) -> None:
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_watchdog_interval_reads_usec_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    mine = {"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 2.5


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},  # another process's watchdog
    ],
)
def test_watchdog_interval_is_none_when_not_ours(env: dict[str, str]) -> None:
    assert watchdog_interval(env) is None


@pytest.mark.slow
def test_service_reports_ready_then_pings_the_watchdog(
    broker: Broker, tiny_model, tmp_path: Path, listener: tuple[socket.socket, str]
) -> None:
    """The real ``edge-agent run`` as systemd's Type=notify + WatchdogSec would see it."""
    sock, path = listener
    config, _node = write_config(tmp_path, broker, tiny_model.int4_dir)
    # A 2 s watchdog: the agent must ping at least every 2 s, so two pings arrive quickly.
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    agent = start_agent(config, env=env)
    try:
        before_ready = _receive_until(sock, "READY=1", timeout=120)
        assert not any("WATCHDOG=1" in m.splitlines() for m in before_ready[:-1])
        _receive_until(sock, "WATCHDOG=1", timeout=5)
        _receive_until(sock, "WATCHDOG=1", timeout=5)
        agent.send_signal(signal.SIGTERM)
        _receive_until(sock, "STOPPING=1", timeout=10)
        assert agent.wait(timeout=15) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
