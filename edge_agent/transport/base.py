"""The transport interface: messages in as an async iterator, publishes out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One received MQTT message; the MQTT 5 properties are None/empty on 3.1.1."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None
    """MQTT 5 Response Topic: where the sender wants an answer."""
    correlation_data: bytes | None = None
    """MQTT 5 Correlation Data: echo it in the answer so the asker can match it."""
    message_expiry_s: int | None = None
    """MQTT 5 Message Expiry Interval left when the broker delivered it."""
    user_properties: tuple[tuple[str, str], ...] = ()
    """MQTT 5 User Properties as (name, value) pairs; names may repeat."""


class Transport(Protocol):
    """What the service needs from a broker connection."""

    async def connect(self) -> None:
        """Connect, announce availability and subscribe; raise TransportError on refusal."""
        ...

    def messages(self) -> AsyncIterator[Message]:
        """Received messages, in order, until :meth:`close`."""
        ...

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
        """Queue a publish; never blocks, safe to call from any thread.

        ``qos`` overrides the configured QoS; ``correlation_data`` and ``expiry_s``
        (Message Expiry Interval) are MQTT 5 properties, ignored on 3.1.1. While the
        broker is unreachable the publish waits in the disk outbox.
        """
        ...

    async def close(self) -> None:
        """Publish ``offline`` availability and disconnect cleanly."""
        ...
