"""paho-mqtt 2.x behind the :class:`~edge_agent.transport.base.Transport` interface.

paho runs its own network thread (``loop_start``); received messages cross into the
asyncio loop with ``call_soon_threadsafe`` so no paho callback reaches the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.domain import OFFLINE, ONLINE
from edge_agent.errors import TransportError
from edge_agent.transport.base import Message

log = structlog.get_logger(__name__)

_CLOSED = Message(topic="", payload=b"")  # sentinel that ends messages()


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Plain connection values, taken from the mqtt settings section by the app."""

    host: str
    port: int
    client_id: str
    keepalive_s: int
    availability_topic: str
    subscriptions: tuple[str, ...]
    qos: int = 1
    username: str | None = None
    password: str | None = None
    connect_timeout_s: float = 10.0


class MqttTransport:
    """A paho client that reconnects by itself and re-announces ``online`` each time."""

    def __init__(self, options: MqttOptions) -> None:
        self._opt = options
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            protocol=paho.MQTTv311,
        )
        client.enable_logger(logging.getLogger("paho.mqtt"))
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        # The broker publishes this for us if we vanish (crash, power loss, SIGKILL).
        client.will_set(options.availability_topic, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    async def connect(self) -> None:
        """Open the connection and wait until the broker has accepted it."""
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        try:
            await asyncio.to_thread(
                self._client.connect, self._opt.host, self._opt.port, self._opt.keepalive_s
            )
        except OSError as exc:
            raise TransportError(
                f"cannot reach the MQTT broker at {self._opt.host}:{self._opt.port}: "
                f"{exc.strerror or exc}; check mqtt.host and mqtt.port and that the broker runs"
            ) from exc
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._connected, self._opt.connect_timeout_s)
        except TimeoutError as exc:
            self._client.loop_stop()
            raise TransportError(
                f"the broker at {self._opt.host}:{self._opt.port} did not answer CONNECT "
                f"within {self._opt.connect_timeout_s:.0f}s"
            ) from exc

    async def messages(self) -> AsyncIterator[Message]:
        """Yield received messages until :meth:`close` is called."""
        while True:
            msg = await self._queue.get()
            if msg is _CLOSED:
                return
            yield msg

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Queue a publish; paho buffers it while reconnecting."""
        info = self._client.publish(topic, payload, qos=self._opt.qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("publish_failed", topic=topic, rc=paho.error_string(info.rc))

    async def close(self) -> None:
        """Announce ``offline`` (a clean exit sends no last will), then disconnect."""
        info = self._client.publish(self._opt.availability_topic, OFFLINE, qos=1, retain=True)
        if self._client.is_connected():
            await asyncio.to_thread(info.wait_for_publish, 5.0)
        self._client.disconnect()
        self._client.loop_stop()
        self._queue.put_nowait(_CLOSED)

    # --- paho callbacks: run on paho's network thread ---------------------------------

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        if rc.is_failure:
            log.error("mqtt_connect_refused", reason=str(rc))
            self._resolve(TransportError(f"the broker refused the connection: {rc}"))
            return
        # Subscriptions and availability are re-sent on every (re)connect: a clean
        # session forgets subscriptions, and a retained 'offline' will may have fired.
        for topic in self._opt.subscriptions:
            client.subscribe(topic, qos=self._opt.qos)
        client.publish(self._opt.availability_topic, ONLINE, qos=1, retain=True)
        log.info("mqtt_connected", host=self._opt.host, port=self._opt.port)
        self._resolve(None)

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        log.warning("mqtt_disconnected", reason=str(rc))

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        message = Message(topic=msg.topic, payload=msg.payload, qos=msg.qos, retain=msg.retain)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)

    def _resolve(self, error: Exception | None) -> None:
        """Complete the connect() future once, from paho's thread."""
        fut, loop = self._connected, self._loop
        if fut is None or loop is None:
            return

        def settle() -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

        loop.call_soon_threadsafe(settle)
