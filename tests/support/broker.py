"""A real Mosquitto broker on a free loopback port, and a small test client for it."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from edge_agent.demo.broker import LocalMosquitto, free_port

__all__ = ["Broker", "Probe", "broker", "free_port", "probe"]


class Broker(LocalMosquitto):
    """The session's broker, plus a factory for test clients."""

    def client(self, *, v5: bool = False) -> Probe:
        """A connected test client (MQTT 3.1.1, or 5 with ``v5``)."""
        return Probe(self.host, self.port, v5=v5)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One mosquitto for the test session."""
    if not LocalMosquitto.available():
        pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto` (.ci/run does)")
    instance = Broker(tmp_path_factory.mktemp("mosquitto"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def probe(broker: Broker) -> Iterator[Probe]:
    """A 3.1.1 test client on the session's broker, closed after the test."""
    client = broker.client()
    yield client
    client.close()


class Probe:
    """A paho client for tests: publish, and wait for messages with a timeout."""

    def __init__(self, host: str, port: int, *, v5: bool = False) -> None:
        self._messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        )
        self.seen: list[paho.MQTTMessage] = []
        """Every message received, in order, whether or not a wait consumed it."""
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        self.seen.append(msg)
        self._messages.put(msg)

    def payloads(self, topic: str) -> list[bytes]:
        """Payloads seen on ``topic`` so far, in order."""
        return [bytes(m.payload) for m in list(self.seen) if m.topic == topic]

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        done = queue.Queue[bool]()
        self._client.on_subscribe = lambda *_a: done.put(True)
        self._client.subscribe(topic, qos=1)
        done.get(timeout=5)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish at QoS 1 and wait until the broker has it."""
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        info.wait_for_publish(5)

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[bytes], bool] = lambda _p: True,
        timeout: float = 60.0,
    ) -> bytes:
        """The first payload on ``topic`` that satisfies ``predicate``; fail on timeout."""
        return bytes(self.wait_message(topic, predicate, timeout).payload)

    def wait_message(
        self,
        topic: str,
        predicate: Callable[[bytes], bool] = lambda _p: True,
        timeout: float = 60.0,
    ) -> paho.MQTTMessage:
        """Like :meth:`wait_for`, but the whole message (with MQTT 5 properties)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self._messages.get(timeout=left)
            except queue.Empty:
                break
            if msg.topic == topic and predicate(msg.payload):
                return msg
        raise AssertionError(f"no matching message on {topic} within {timeout}s")

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()
