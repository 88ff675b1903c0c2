"""Outgoing publishes in order: straight to paho while the broker is there, else the disk outbox.

A QoS 1/2 publish made while the broker is away waits in the :class:`Outbox`; a QoS 0
one is dropped and counted. After a reconnect
the outbox is sent first, in order, and only then do new publishes go straight to paho
again, so nothing overtakes an older message. A row leaves the outbox only when the
broker has confirmed it (PUBACK), in batches, because every delete is an fsync.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.transport.outbox import Outbox, OutboxEntry

log = structlog.get_logger(__name__)

_FLUSH_BATCH = 200
_DELETE_DELAY_S = 0.2  # confirmed outbox rows are deleted in batches (one fsync each)
_QOS0_LOG_EVERY = 100  # a stream during an outage is many pieces: one log line per 100


class OutboxSender:
    """Publishes through ``client`` now, or through ``outbox`` until :meth:`flush` ran."""

    def __init__(
        self,
        client: paho.Client,
        outbox: Outbox,
        loop: asyncio.AbstractEventLoop,
        *,
        v5: bool,
    ) -> None:
        self._client = client
        self._outbox = outbox
        self._loop = loop
        self._v5 = v5
        self.up = False  # connected and the outbox drained: publish straight to paho
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox row id
        self._confirmed: list[int] = []
        self._last_handed = 0  # highest outbox row given to paho in this process
        self.qos0_dropped_total = 0
        """QoS 0 publishes dropped while the broker was away (never stored)."""

    def send(self, entry: OutboxEntry) -> None:
        """Publish now if the broker is there and nothing older waits; else store it.

        QoS 0 is never stored: it promises nothing (``summary/stream`` pieces, which
        expire in a minute anyway), and outbox rows are capacity for messages that do.
        While the broker is away such a publish is dropped and counted.
        """
        if not self.up:
            if entry.qos == 0:
                self.qos0_dropped_total += 1
                if self.qos0_dropped_total % _QOS0_LOG_EVERY == 1:
                    log.info(
                        "qos0_publish_dropped_offline",
                        topic=entry.topic,
                        dropped_total=self.qos0_dropped_total,
                    )
                return
            self._outbox.append(entry)
            return
        info = self._publish(entry, entry.expiry_s)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("publish_failed", topic=entry.topic, rc=paho.error_string(info.rc))

    async def flush(self, current: Callable[[], bool]) -> None:
        """Send the outbox in order while ``current()``, then let publishes go straight out.

        ``current`` turns False when this connection is gone; the next one flushes again.
        """
        sent = 0
        while current():
            batch = self._outbox.pending(after_id=self._last_handed, limit=_FLUSH_BATCH)
            if not batch:
                self.up = True
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
                info = self._publish(entry, expiry)
                self._in_flight[info.mid] = entry.id
                sent += 1
            await asyncio.sleep(0)  # let paho write and read acks between batches

    def on_publish(self, mid: int) -> None:
        """The broker confirmed paho message ``mid``: its outbox row can go."""
        row = self._in_flight.pop(mid, None)
        if row is None:
            return
        self._confirmed.append(row)
        if len(self._confirmed) == 1:
            self._loop.call_later(_DELETE_DELAY_S, self.delete_confirmed)

    def delete_confirmed(self) -> None:
        """Delete the confirmed rows now (one transaction)."""
        if self._confirmed:
            self._outbox.remove_many(self._confirmed)
            self._confirmed = []

    def _publish(self, entry: OutboxEntry, expiry_s: int | None) -> paho.MQTTMessageInfo:
        return self._client.publish(
            entry.topic,
            entry.payload,
            qos=entry.qos,
            retain=entry.retain,
            properties=self._properties(entry.correlation_data, expiry_s),
        )

    def _properties(self, correlation_data: bytes | None, expiry_s: int | None) -> Any:
        if not self._v5 or (correlation_data is None and expiry_s is None):
            return None  # 3.1.1 has no properties: they are dropped, not an error
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        return props
