"""The transport interface: messages in as an async iterator, publishes out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One received MQTT message."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


class Transport(Protocol):
    """What the service needs from a broker connection."""

    async def connect(self) -> None:
        """Connect, announce availability and subscribe; raise TransportError on refusal."""
        ...

    def messages(self) -> AsyncIterator[Message]:
        """Received messages, in order, until :meth:`close`."""
        ...

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Queue a publish; safe to call from any thread."""
        ...

    async def close(self) -> None:
        """Publish ``offline`` availability and disconnect cleanly."""
        ...
