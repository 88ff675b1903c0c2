"""Publishes discovery at start and again after Home Assistant's birth message.

Home Assistant announces ``online`` on ``<prefix>/status`` when it (re)starts. Retained
discovery usually survives that, but not a broker that lost its retained store, so we
answer each birth with a republish — after a random delay in ``[0, jitter_s]`` so a
fleet of devices does not answer at the same instant, and only once for a burst of
births (a birth that arrives while a republish is pending is covered by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

import structlog

from edge_agent.domain import ONLINE
from edge_agent.ha.discovery import DiscoveryMessage

log = structlog.get_logger(__name__)


class PublishFn(Protocol):
    """``Transport.publish``: queue one publish; never blocks."""

    def __call__(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Publish ``payload`` on ``topic``."""


StatesFn = Callable[[], Iterable[tuple[str, bytes]]]
"""The latest retained states as ``(topic, payload)`` pairs, republished after discovery."""


def _no_states() -> Iterable[tuple[str, bytes]]:
    return ()


class DiscoveryPublisher:
    """Owns the discovery messages of one node and when they are (re)published.

    Runs on the event loop: :meth:`on_status` is called with each payload received on
    :attr:`status_topic` and schedules the republish as an asyncio task.
    """

    def __init__(
        self,
        publish: PublishFn,
        messages: Sequence[DiscoveryMessage],
        *,
        status_topic: str,
        jitter_s: float,
        states: StatesFn = _no_states,
        uniform: Callable[[float, float], float] = random.uniform,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._publish = publish
        self._messages = tuple(messages)
        self.status_topic = status_topic
        self._jitter_s = jitter_s
        self._states = states
        self._uniform = uniform
        self._sleep = sleep
        self._pending: asyncio.Task[None] | None = None
        self.republished = 0
        """How many birth-triggered republishes have completed (for tests and status)."""

    def start(self) -> None:
        """Publish every discovery message, retained; call once connected."""
        self._publish_discovery()
        log.info("ha_discovery_published", messages=len(self._messages), reason="start")

    def on_status(self, payload: bytes) -> None:
        """Handle a message on ``<prefix>/status``: ``online`` schedules a republish."""
        if payload.strip().decode("utf-8", errors="replace") != ONLINE:
            return  # 'offline' (HA's last will) or noise: nothing to do until it is back
        if self._pending is not None and not self._pending.done():
            log.debug("ha_birth_debounced")
            return
        delay = self._uniform(0.0, self._jitter_s) if self._jitter_s > 0 else 0.0
        log.info("ha_birth_received", republish_in_s=round(delay, 3))
        self._pending = asyncio.create_task(self._republish(delay), name="ha-republish")

    async def close(self) -> None:
        """Cancel a pending republish (on shutdown)."""
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
        self._pending = None

    async def _republish(self, delay: float) -> None:
        await self._sleep(delay)
        self._publish_discovery()
        states = 0
        try:
            for topic, payload in self._states():
                self._publish(topic, payload, retain=True)
                states += 1
        except Exception:  # a broken state callback must not lose the discovery republish
            log.exception("ha_state_republish_failed")
        self.republished += 1
        log.info(
            "ha_discovery_published", messages=len(self._messages), states=states, reason="birth"
        )

    def _publish_discovery(self) -> None:
        for message in self._messages:
            self._publish(message.topic, message.to_payload(), retain=True)
