"""A throw-away Mosquitto on a free loopback port, for the demo and the tests."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from edge_agent.errors import StartupError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalMosquitto:
    """``mosquitto`` with its config, persistence and log in ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """Whether a ``mosquitto`` binary is on PATH (or in /usr/sbin, where Debian puts it)."""
        return _binary() is not None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start and wait until it accepts TCP connections."""
        binary = _binary()
        if binary is None:
            raise StartupError("mosquitto is not installed: sudo apt-get install -y mosquitto")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            # As root, mosquitto would drop to the 'mosquitto' user, who cannot write
            # into a private temp dir; as anyone else, 'user' has no effect.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )
        self._process = subprocess.Popen([binary, "-c", str(conf)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise StartupError(f"mosquitto did not listen on port {self.port}; see {self.workdir}")

    def stop(self) -> None:
        """Stop cleanly; mosquitto writes its persistence file on SIGTERM."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


def _binary() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
