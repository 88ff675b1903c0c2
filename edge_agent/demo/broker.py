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

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_config: str = "",
    ) -> None:
        self.workdir = workdir
        self.extra_config = extra_config
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
            f"{self.extra_config}"
        )
        with (self.workdir / "mosquitto.stderr").open("wb") as err:
            # Its own session: a Ctrl-C in the terminal reaches only the demo, which then
            # shuts the agent down while the broker is still up, and stops the broker last.
            # Its stderr (a warning when run as root) would scribble over the live view.
            self._process = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise StartupError(f"mosquitto did not listen on port {self.port}; see {self.workdir}")

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return None if self._process is None else self._process.pid

    @staticmethod
    def describe() -> str:
        """``mosquitto <version>`` (or just ``mosquitto``), for the demo's broker line."""
        binary = _binary()
        if binary is None:
            return "mosquitto"
        try:
            out = subprocess.run(
                [binary, "-h"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "mosquitto"
        # First line: "mosquitto version 2.0.11"
        words = out.split("\n", 1)[0].split()
        return f"mosquitto {words[2]}" if len(words) >= 3 and words[1] == "version" else "mosquitto"

    def stop(self) -> None:
        """Stop cleanly; mosquitto writes its persistence file on SIGTERM."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            self._process = None


def _binary() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
