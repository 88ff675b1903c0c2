"""A real Mosquitto broker on a free loopback port, and a small test client for it."""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Broker:
    """A running mosquitto process with persistence in its own folder."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start mosquitto and wait until it accepts TCP connections."""
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )
        self.process = subprocess.Popen(["mosquitto", "-c", str(conf)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}; see {self.workdir}")

    def stop(self) -> None:
        """Stop mosquitto cleanly (it saves its persistence file on SIGTERM)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> Probe:
        """A connected test client."""
        return Probe(self.host, self.port)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One mosquitto for the test session."""
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto` (.ci/run does)")
    instance = Broker(tmp_path_factory.mktemp("mosquitto"))
    instance.start()
    yield instance
    instance.stop()


class Probe:
    """A paho client for tests: publish, and wait for messages with a timeout."""

    def __init__(self, host: str, port: int) -> None:
        self._messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
        )
        self._client.on_message = lambda _c, _u, msg: self._messages.put(msg)
        self._client.connect(host, port)
        self._client.loop_start()

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        done = queue.Queue[bool]()
        self._client.on_subscribe = lambda *_a: done.put(True)
        self._client.subscribe(topic, qos=1)
        done.get(timeout=5)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait until the broker has it."""
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[bytes], bool] = lambda _p: True,
        timeout: float = 60.0,
    ) -> bytes:
        """The first payload on ``topic`` that satisfies ``predicate``; fail on timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self._messages.get(timeout=left)
            except queue.Empty:
                break
            if msg.topic == topic and predicate(msg.payload):
                return bytes(msg.payload)
        raise AssertionError(f"no matching message on {topic} within {timeout}s")

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()
