"""A real Mosquitto broker on a free loopback port, and a small test client for it."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.demo.broker import LocalMosquitto, free_port

__all__ = ["Broker", "Probe", "broker", "free_port"]


class Broker(LocalMosquitto):
    """The session's broker, plus a factory for test clients."""

    def client(self) -> Probe:
        """A connected test client."""
        return Probe(self.host, self.port)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One mosquitto for the test session."""
    if not LocalMosquitto.available():
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
