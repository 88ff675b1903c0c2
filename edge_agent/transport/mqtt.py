"""paho-mqtt 2.x behind the :class:`~edge_agent.transport.base.Transport` interface.

paho is built in :mod:`.paho_client` and driven from the asyncio loop by :mod:`.paho_io`,
so every paho callback runs on the loop and none escapes this module. Only the blocking
TCP/TLS connect runs in a worker thread. This module owns the session: the reconnect
loop (paho's has no jitter), the inbound queue with backpressure, and manual
acknowledgement of QoS 1/2 messages after the service has handled them. Publishes go
through :mod:`.sending`: in order, with a disk outbox while the broker is away.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.domain import OFFLINE, ONLINE
from edge_agent.errors import TransportError
from edge_agent.transport.base import Message
from edge_agent.transport.client_factory import closed_before_connack
from edge_agent.transport.options import MqttOptions, TlsOptions, backoff_delay
from edge_agent.transport.outbox import Outbox, OutboxEntry
from edge_agent.transport.paho_client import make_client, open_connection
from edge_agent.transport.paho_io import BufferedClient, SocketDriver
from edge_agent.transport.sending import OutboxSender

__all__ = ["MqttOptions", "MqttTransport", "TlsOptions"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Inbound:
    """A received message and what is needed to acknowledge it (qos 0: nothing)."""

    message: Message | None  # None ends messages()
    mid: int = 0
    qos: int = 0
    generation: int = 0


class MqttTransport:
    """A broker connection that reconnects by itself and re-announces ``online``."""

    def __init__(self, options: MqttOptions, *, rng: random.Random | None = None) -> None:
        self._opt = options
        self._rng = rng or random.Random()
        self._v5 = options.protocol == "5"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Inbound] = asyncio.Queue()
        self._outbox: Outbox | None = None
        self._sender: OutboxSender | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._lost = asyncio.Event()
        self._gone: asyncio.Future[None] | None = None  # set by on_disconnect during close()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._connected = False  # CONNACK accepted and the socket is open
        self._generation = 0  # bumps on every CONNACK; stale acks are dropped
        self._first_connect = True
        self.reconnects_total = 0
        self.backpressure_total = 0
        self._backpressure_logged = -1e9
        self._client = self._make_client()
        self._io = SocketDriver(self._client)

    # --- public API --------------------------------------------------------------------

    @property
    def outbox_size(self) -> int:
        """Publishes waiting in the disk outbox (sent ones until the broker confirms)."""
        return self._outbox.size if self._outbox is not None else 0

    @property
    def outbox_dropped_total(self) -> int:
        """Publishes dropped unsent: outbox full (oldest first) or older than max age."""
        return self._outbox.dropped_total if self._outbox is not None else 0

    @property
    def qos0_dropped_total(self) -> int:
        """QoS 0 publishes (stream pieces) dropped while the broker was away."""
        return self._sender.qos0_dropped_total if self._sender is not None else 0

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the current connection."""
        return self._connected

    async def connect(self) -> None:
        """Connect, announce ``online`` and subscribe; raise TransportError on failure.

        Only this first attempt raises; later losses are retried with backoff.
        """
        self._loop = asyncio.get_running_loop()
        self._io.bind(self._loop)
        self._outbox = Outbox(
            self._opt.outbox_path,
            self._opt.client_id,
            max_messages=self._opt.outbox_max_messages,
            max_age_s=self._opt.outbox_max_age_s,
        )
        self._sender = OutboxSender(self._client, self._outbox, self._loop, v5=self._v5)
        try:
            await self._establish()
        except TransportError:
            self._io.detach()
            self._outbox.close()
            raise
        self._spawn(self._misc(), "mqtt-misc")
        self._spawn(self._supervise(), "mqtt-reconnect")

    async def messages(self) -> AsyncIterator[Message]:
        """Received messages in order until :meth:`close`; at-least-once for QoS ≥ 1.

        A QoS 1/2 message is acknowledged when the consumer comes back for the next one,
        that is after it has been handled: one that is being handled at a crash (or
        when the connection drops) is the broker's still, and comes again from the
        persistent session. The acks of a burst leave in one write on the next loop
        iteration (:mod:`.paho_io`), not one system call each.
        """
        while True:
            item = await self._queue.get()
            if item.message is None:
                return
            if self._io.paused and self._queue.qsize() <= self._opt.inbound_queue_max // 2:
                self._io.resume()
            yield item.message
            self._ack(item)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        qos: int | None = None,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
    ) -> None:
        """Queue a publish; while the broker is away (or the outbox drains) it goes to disk."""
        if self._stopping:
            # A late stream delta from the inference thread during shutdown: nothing to do.
            log.debug("publish_after_close_dropped", topic=topic)
            return
        entry = OutboxEntry(
            topic=topic,
            payload=payload.encode() if isinstance(payload, str) else bytes(payload),
            qos=self._opt.qos if qos is None else qos,
            retain=retain,
            correlation_data=correlation_data,
            expiry_s=expiry_s,
        )
        loop = self._loop
        if loop is None:
            log.warning("publish_before_connect_dropped", topic=topic)
        elif self._io.on_loop():
            self._publish_entry(entry)
        else:
            loop.call_soon_threadsafe(self._publish_entry, entry)

    async def close(self) -> None:
        """Announce ``offline`` (a clean exit sends no last will), then disconnect."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connected and self._loop is not None:
            info = self._client.publish(self._opt.availability_topic, OFFLINE, qos=1, retain=True)
            deadline = time.monotonic() + 5.0
            while not info.is_published() and self._connected and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            self._gone = self._loop.create_future()
            self._client.disconnect()
            try:
                await asyncio.wait_for(self._gone, 2.0)
            except TimeoutError:
                log.warning("mqtt_disconnect_timeout")
        self._io.detach()
        if self._sender is not None:
            self._sender.delete_confirmed()
        if self._outbox is not None:
            self._outbox.close()
        self._queue.put_nowait(_Inbound(message=None))

    # --- connection ---------------------------------------------------------------------

    def _make_client(self) -> BufferedClient:
        client = make_client(self._opt)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    async def _establish(self) -> None:
        """One connection attempt: TCP/TLS in a thread, then CONNECT/CONNACK on the loop."""
        assert self._loop is not None
        opt = self._opt
        self._handshake = self._loop.create_future()
        await asyncio.to_thread(open_connection, self._client, opt, first=self._first_connect)
        self._first_connect = False
        self._io.attach()
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), opt.connect_timeout_s)
        except TimeoutError as exc:
            self._handshake.cancel()
            raise TransportError(
                f"the broker at {opt.host}:{opt.port} did not answer CONNECT within "
                f"{opt.connect_timeout_s:.0f}s"
            ) from exc

    async def _supervise(self) -> None:
        """Reconnect after a loss: the first attempt at once (within 0.5 s), then
        min(cap, base·2^n) × jitter (:func:`backoff_delay`), each attempt logged."""
        opt = self._opt
        while not self._stopping:
            await self._lost.wait()
            attempt = 0
            while not self._stopping:
                delay = backoff_delay(attempt, opt.reconnect_min_s, opt.reconnect_max_s, self._rng)
                attempt += 1
                log.info("mqtt_reconnect_scheduled", attempt=attempt, delay_s=round(delay, 2))
                await asyncio.sleep(delay)
                self._lost.clear()
                try:
                    await self._establish()
                except TransportError as exc:
                    self._io.detach()
                    log.warning("mqtt_reconnect_failed", attempt=attempt, error=str(exc))
                    continue
                self.reconnects_total += 1
                break

    async def _misc(self) -> None:
        """paho's housekeeping: keep-alive pings and retries, once a second."""
        while True:
            await asyncio.sleep(1.0)
            if self._io.attached:
                self._client.loop_misc()

    # --- inbound ------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._io.pause():
            return
        self.backpressure_total += 1
        now = time.monotonic()
        if now - self._backpressure_logged > 60.0:  # at most one warning a minute
            self._backpressure_logged = now
            log.warning(
                "mqtt_inbound_backpressure",
                queued=self._queue.qsize(),
                pauses_total=self.backpressure_total,
            )

    def _ack(self, item: _Inbound) -> None:
        # An ack for an older connection would name a packet id the broker no longer
        # expects; it re-sends such a message itself, so drop the ack.
        if item.qos > 0 and item.generation == self._generation and self._connected:
            self._client.ack(item.mid, item.qos)

    def _forget_unacked(self) -> None:
        """Drop queued QoS 1/2 messages of older connections: the resumed session
        re-sends each of them (they were never acknowledged), so keeping them would
        hand the service every one twice."""
        kept = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        for item in kept:
            if item.qos == 0 or item.generation == self._generation or item.message is None:
                self._queue.put_nowait(item)

    def _publish_entry(self, entry: OutboxEntry) -> None:
        if self._stopping:
            log.debug("publish_after_close_dropped", topic=entry.topic)
        elif self._sender is not None:
            self._sender.send(entry)

    # --- paho callbacks: all run on the asyncio loop ------------------------------------

    def _on_connect(
        self, client: paho.Client, _userdata: Any, flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        if rc.is_failure:
            log.error("mqtt_connect_refused", reason=str(rc))
            self._settle(TransportError(f"the broker refused the connection: {rc}"))
            return
        self._generation += 1
        self._connected = True
        session_present = bool(flags.session_present)
        # With a session present the broker kept our subscriptions; re-subscribing is
        # harmless (same filters replace themselves) except that the broker re-sends
        # the retained messages on those filters. We still subscribe on the first connect
        # of a process, since the configured filters may have changed since the session
        # was created, and whenever the broker has no session (expired, not persisted).
        if self.reconnects_total == 0 or not session_present:
            for topic in self._opt.subscriptions:
                if self._v5:
                    # No Local: the broker never hands us our own publishes (an action's
                    # command under a sensor filter, or anything we might answer onto).
                    # Retain As Published: a message published retained says so even
                    # when it arrives live, so a retained approval is always seen as one.
                    options = SubscribeOptions(
                        qos=self._opt.qos, noLocal=True, retainAsPublished=True
                    )
                    client.subscribe(topic, options=options)
                else:
                    client.subscribe(topic, qos=self._opt.qos)
        if session_present:
            self._forget_unacked()
        # A retained 'offline' last will may have fired while we were away.
        client.publish(self._opt.availability_topic, ONLINE, qos=1, retain=True)
        log.info(
            "mqtt_connected",
            host=self._opt.host,
            port=self._opt.port,
            protocol=self._opt.protocol,
            session_present=session_present,
            outbox=self.outbox_size,
        )
        # Scheduled, not called: paho re-sends its own unacknowledged publishes right
        # after this callback returns, and those are older than anything in the outbox.
        if self._sender is not None:
            generation = self._generation

            def current() -> bool:
                return self._connected and generation == self._generation

            self._spawn(self._sender.flush(current), "mqtt-outbox-flush")
        self._settle(None)

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        was_connected = self._connected
        self._connected = False
        if self._sender is not None:
            self._sender.up = False
        self._io.detach()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        if self._stopping:
            return
        if was_connected:
            log.warning("mqtt_disconnected", reason=str(rc))
            error = TransportError(f"the broker closed the connection: {rc}")
        else:
            where = f"{self._opt.host}:{self._opt.port}"
            error = TransportError(closed_before_connack(where, rc, tls=self._opt.tls is not None))
        self._settle(error)
        self._lost.set()

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        props = msg.properties
        try:
            message = Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
                response_topic=getattr(props, "ResponseTopic", None),
                correlation_data=getattr(props, "CorrelationData", None),
                message_expiry_s=getattr(props, "MessageExpiryInterval", None),
                user_properties=tuple(getattr(props, "UserProperty", ())),
            )
        except UnicodeDecodeError:
            log.warning("mqtt_topic_not_utf8_skipped", mid=msg.mid)
            self._ack(_Inbound(None, msg.mid, msg.qos, self._generation))
            return
        self._queue.put_nowait(_Inbound(message, msg.mid, msg.qos, self._generation))
        if self._queue.qsize() > self._opt.inbound_queue_max:
            # On MQTT 5 our Receive Maximum (= queue size) should hold QoS 1/2 back, but
            # Mosquitto 2.0.11 was measured with up to twice that many unacknowledged
            # under load; QoS 0 (and a 3.1.1 broker's own in-flight window) has no such
            # limit at all. Stop reading the socket rather than drop; TCP holds the rest.
            self._pause_reading()

    def _on_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, _rc: ReasonCode, _props: Any
    ) -> None:
        if self._sender is not None:
            self._sender.on_publish(mid)

    def _settle(self, error: Exception | None) -> None:
        fut = self._handshake
        if fut is None or fut.done():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)

    def _spawn(self, coro: Any, name: str) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
