"""paho-mqtt 2.x behind the :class:`~edge_agent.transport.base.Transport` interface.

paho is driven from the asyncio loop (its socket callbacks + ``loop_read``/``loop_write``
/``loop_misc``, as in paho's ``loop_asyncio`` example), so every paho callback runs on
the loop and none escapes this module. Only the blocking TCP/TLS connect runs in a
worker thread. We own the reconnect loop (paho's has no jitter), a disk outbox for
publishes while the broker is away, and manual acknowledgement of QoS 1/2 messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.domain import OFFLINE, ONLINE
from edge_agent.errors import TransportError
from edge_agent.transport.base import Message
from edge_agent.transport.options import MqttOptions, TlsOptions, backoff_delay, tls_context
from edge_agent.transport.outbox import Outbox, OutboxEntry

__all__ = ["MqttOptions", "MqttTransport", "TlsOptions"]

log = structlog.get_logger(__name__)

_FLUSH_BATCH = 200
_DELETE_DELAY_S = 0.2  # confirmed outbox rows are deleted in batches (one fsync each)


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
        self._loop_thread = 0
        self._queue: asyncio.Queue[_Inbound] = asyncio.Queue()
        self._outbox: Outbox | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._lost = asyncio.Event()
        self._gone: asyncio.Future[None] | None = None  # set by on_disconnect during close()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._connected = False  # CONNACK accepted and the socket is open
        self._up = False  # connected and the outbox drained: publish straight to paho
        self._generation = 0  # bumps on every CONNACK; stale acks are dropped
        self._first_connect = True
        self._fd: int | None = None  # socket attached to the loop
        self._sock: Any = None
        self._attach_write = False
        self._paused = False
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox row id
        self._confirmed: list[int] = []
        self._last_handed = 0  # highest outbox row given to paho in this process
        self.reconnects_total = 0
        self.backpressure_total = 0
        self._backpressure_logged = -1e9
        self._client = self._make_client()

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
    def connected(self) -> bool:
        """Whether the broker has accepted the current connection."""
        return self._connected

    async def connect(self) -> None:
        """Connect, announce ``online`` and subscribe; raise TransportError on failure.

        Only this first attempt raises; later losses are retried with backoff.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._outbox = Outbox(
            self._opt.outbox_path,
            self._opt.client_id,
            max_messages=self._opt.outbox_max_messages,
            max_age_s=self._opt.outbox_max_age_s,
        )
        try:
            await self._establish()
        except TransportError:
            self._detach()
            self._outbox.close()
            raise
        self._spawn(self._misc(), "mqtt-misc")
        self._spawn(self._supervise(), "mqtt-reconnect")

    async def messages(self) -> AsyncIterator[Message]:
        """Received messages in order until :meth:`close`; at-least-once for QoS ≥ 1.

        A QoS 1/2 message is acknowledged only when the service takes it from the queue,
        so whatever sits in the queue at a crash is still the broker's and is delivered
        again from the persistent session. (Acking after handling would add nothing: the
        service's windows live in memory, and it would re-deliver the last message after
        every reconnect.)
        """
        while True:
            item = await self._queue.get()
            if item.message is None:
                return
            self._ack(item)
            if self._paused and self._queue.qsize() <= self._opt.inbound_queue_max // 2:
                self._resume_reading()
            yield item.message

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
        elif threading.get_ident() == self._loop_thread:
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
        self._detach()
        if self._outbox is not None:
            self._delete_confirmed()
            self._outbox.close()
        self._queue.put_nowait(_Inbound(message=None))

    # --- connection ---------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        opt = self._opt
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=opt.client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            # 3.1.1 keeps the session through clean_session=False; on MQTT 5 paho wants
            # None here and clean_start (+ session expiry) on connect() instead.
            clean_session=None if self._v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.enable_logger(logging.getLogger("paho.mqtt"))
        client.connect_timeout = opt.connect_timeout_s
        if opt.tls is not None:
            client.tls_set_context(tls_context(opt.tls))
            # Also keeps paho from its own ssl.match_hostname (gone in Python 3.12): the
            # context checks the host name unless 'insecure' says not to.
            client.tls_insecure_set(opt.tls.insecure)
        if opt.username is not None:
            client.username_pw_set(opt.username, opt.password)
        # The broker publishes this for us if we vanish (crash, power loss, SIGKILL).
        client.will_set(opt.availability_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    async def _establish(self) -> None:
        """One connection attempt: TCP/TLS in a thread, then CONNECT/CONNACK on the loop."""
        assert self._loop is not None
        opt = self._opt
        where = f"{opt.host}:{opt.port}"
        self._handshake = self._loop.create_future()
        try:
            if self._first_connect:
                await asyncio.to_thread(self._connect_first)
                self._first_connect = False
            else:
                await asyncio.to_thread(self._client.reconnect)
        except ssl.SSLError as exc:
            _close_leaked_sockets(exc)
            raise TransportError(
                f"TLS handshake with the MQTT broker at {where} failed: "
                f"{getattr(exc, 'verify_message', None) or exc.reason or exc}; "
                "check mqtt.tls.ca_file and that mqtt.host matches the broker certificate"
            ) from exc
        except OSError as exc:
            raise TransportError(
                f"cannot reach the MQTT broker at {where}: {exc.strerror or exc}; "
                "check mqtt.host and mqtt.port and that the broker runs"
            ) from exc
        self._attach()
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), opt.connect_timeout_s)
        except TimeoutError as exc:
            self._handshake.cancel()
            raise TransportError(
                f"the broker at {where} did not answer CONNECT within {opt.connect_timeout_s:.0f}s"
            ) from exc

    def _connect_first(self) -> None:
        opt = self._opt
        if self._v5:
            # paho quirk: MQTT 5's default clean_start is FIRST_ONLY, which wipes our
            # session on every process start. clean_start=False plus a session expiry
            # lets the broker queue QoS 1/2 messages while we are down; paho keeps both
            # (and these CONNECT properties) for its reconnect().
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = opt.session_expiry_s
            # The broker never has more unacknowledged QoS 1/2 messages out to us than
            # our inbound queue holds: flow control instead of loss.
            props.ReceiveMaximum = max(1, min(opt.inbound_queue_max, 65535))
            self._client.connect(
                opt.host, opt.port, opt.keepalive_s, clean_start=False, properties=props
            )
        else:
            self._client.connect(opt.host, opt.port, opt.keepalive_s)

    async def _supervise(self) -> None:
        """Reconnect after a loss: delays min(cap, base·2^n) × jitter, each attempt logged."""
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
                    self._detach()
                    log.warning("mqtt_reconnect_failed", attempt=attempt, error=str(exc))
                    continue
                self.reconnects_total += 1
                break

    async def _misc(self) -> None:
        """paho's housekeeping: keep-alive pings and retries, once a second."""
        while True:
            await asyncio.sleep(1.0)
            if self._fd is not None:
                self._client.loop_misc()

    # --- socket plumbing (paho's external event loop interface) ------------------------

    def _attach(self) -> None:
        """Watch the socket paho opened in the worker thread, and write its CONNECT."""
        assert self._loop is not None
        sock = self._client.socket()
        if sock is None or self._fd is not None:
            return
        self._sock, self._fd = sock, sock.fileno()
        self._paused = False
        self._loop.add_reader(self._fd, self._on_readable)
        if self._attach_write:
            self._loop.add_writer(self._fd, self._client.loop_write)

    def _detach(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd, self._sock, self._attach_write = None, None, False

    def _on_readable(self) -> None:
        self._client.loop_read()
        # TLS: bytes already decrypted inside the SSL object never make the fd readable
        # again, so drain them now or they wait for the next packet (or keep-alive).
        sock = self._sock
        if not isinstance(sock, ssl.SSLSocket):
            return
        while not self._paused and self._sock is sock and sock.pending():
            self._client.loop_read()

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        # Called from the connect thread; _establish attaches the socket on the loop.
        pass

    def _on_socket_close(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        if self._on_loop():
            self._detach()

    def _on_socket_register_write(self, _client: paho.Client, _userdata: Any, _s: Any) -> None:
        if not self._on_loop():
            self._attach_write = True  # the CONNECT queued by the connect thread
        elif self._fd is not None and self._loop is not None:
            self._loop.add_writer(self._fd, self._client.loop_write)

    def _on_socket_unregister_write(self, _client: paho.Client, _userdata: Any, _s: Any) -> None:
        self._attach_write = False
        if self._on_loop() and self._fd is not None and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _pause_reading(self) -> None:
        if not self._paused and self._fd is not None and self._loop is not None:
            self._paused = True
            self.backpressure_total += 1
            self._loop.remove_reader(self._fd)
            now = time.monotonic()
            if now - self._backpressure_logged > 60.0:  # at most one warning a minute
                self._backpressure_logged = now
                log.warning(
                    "mqtt_inbound_backpressure",
                    queued=self._queue.qsize(),
                    pauses_total=self.backpressure_total,
                )

    def _resume_reading(self) -> None:
        self._paused = False
        if self._fd is not None and self._loop is not None:
            self._loop.add_reader(self._fd, self._on_readable)

    # --- outbox -------------------------------------------------------------------------

    def _publish_entry(self, entry: OutboxEntry) -> None:
        if self._stopping:
            log.debug("publish_after_close_dropped", topic=entry.topic)
            return
        if not self._up and self._outbox is not None:
            self._outbox.append(entry)
            return
        info = self._client.publish(
            entry.topic,
            entry.payload,
            qos=entry.qos,
            retain=entry.retain,
            properties=self._properties(entry.correlation_data, entry.expiry_s),
        )
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("publish_failed", topic=entry.topic, rc=paho.error_string(info.rc))

    async def _flush_outbox(self, generation: int) -> None:
        """Send the outbox in order, then let new publishes go straight out."""
        assert self._outbox is not None
        sent = 0
        while self._connected and generation == self._generation:
            batch = self._outbox.pending(after_id=self._last_handed, limit=_FLUSH_BATCH)
            if not batch:
                self._up = True
                if sent:
                    log.info("outbox_flushed", sent=sent, waiting_ack=self._outbox.size)
                return
            now = time.time()
            for entry in batch:
                self._last_handed = entry.id
                expiry = entry.expiry_s
                if expiry is not None:
                    expiry -= int(now - entry.created)
                    if expiry <= 0:
                        log.info("outbox_message_expired", topic=entry.topic)
                        self._outbox.remove(entry.id)
                        continue
                info = self._client.publish(
                    entry.topic,
                    entry.payload,
                    qos=entry.qos,
                    retain=entry.retain,
                    properties=self._properties(entry.correlation_data, expiry),
                )
                self._in_flight[info.mid] = entry.id
                sent += 1
            await asyncio.sleep(0)  # let paho write and read acks between batches

    def _delete_confirmed(self) -> None:
        if self._confirmed and self._outbox is not None:
            self._outbox.remove_many(self._confirmed)
            self._confirmed = []

    def _properties(self, correlation_data: bytes | None, expiry_s: int | None) -> Any:
        if not self._v5 or (correlation_data is None and expiry_s is None):
            return None  # 3.1.1 has no properties: they are dropped, not an error
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        return props

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
        self._spawn(self._flush_outbox(self._generation), "mqtt-outbox-flush")
        self._settle(None)

    def _forget_unacked(self) -> None:
        """Drop queued QoS 1/2 messages of older connections: the resumed session
        re-sends each of them (they were never acknowledged), so keeping them would
        hand the service every one twice."""
        kept = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        for item in kept:
            if item.qos == 0 or item.generation == self._generation or item.message is None:
                self._queue.put_nowait(item)

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        was_connected = self._connected
        self._connected = self._up = False
        self._detach()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        if self._stopping:
            return
        if was_connected:
            log.warning("mqtt_disconnected", reason=str(rc))
        self._settle(TransportError(f"the broker closed the connection: {rc}"))
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
            # QoS 1/2 alone never get here on MQTT 5: Receive Maximum = queue size and
            # we ack on take. QoS 0 (or a 3.1.1 broker's larger in-flight window) can:
            # stop reading the socket rather than drop, and let TCP hold the rest.
            self._pause_reading()

    def _on_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, _rc: ReasonCode, _props: Any
    ) -> None:
        row = self._in_flight.pop(mid, None)
        if row is None:
            return
        self._confirmed.append(row)
        if len(self._confirmed) == 1 and self._loop is not None:
            self._loop.call_later(_DELETE_DELAY_S, self._delete_confirmed)

    def _ack(self, item: _Inbound) -> None:
        # An ack for an older connection would name a packet id the broker no longer
        # expects; it re-sends such a message itself, so drop the ack.
        if item.qos > 0 and item.generation == self._generation and self._connected:
            self._client.ack(item.mid, item.qos)

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


def _close_leaked_sockets(exc: BaseException) -> None:
    """Close the socket paho leaves open when the TLS handshake in connect() fails.

    paho wraps and handshakes inside a helper and never closes the socket on error;
    it is only reachable from the traceback's frames.
    """
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, socket.socket):
                value.close()
        tb = tb.tb_next
