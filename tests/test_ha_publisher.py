"""DiscoveryPublisher with an injected publish, random source and sleep: no broker."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest

from edge_agent.ha.discovery import DiscoveryMessage, HaNode, component_discovery
from edge_agent.ha.publisher import DiscoveryPublisher

NODE = HaNode("pi", "edge-agent", "homeassistant", "0.1.0", "m", ("Hall",))
MESSAGES = component_discovery(NODE)


class Recorder:
    """A publish function that remembers (topic, payload, retain)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def __call__(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        self.sent.append(
            (topic, payload if isinstance(payload, bytes) else payload.encode(), retain)
        )


class Gate:
    """A sleep that records the delay and waits until the test releases it."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.release = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.release.wait()


def sync(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop, bounded by a timeout."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(10):
                await test(*args, **kwargs)

        asyncio.run(bounded())

    return run


def make(
    jitter_s: float = 3.0,
    states: Iterable[tuple[str, bytes]] = (("edge-agent/pi/summary", b"{}"),),
) -> tuple[DiscoveryPublisher, Recorder, Gate, list[tuple[float, float]]]:
    recorder, gate, draws = Recorder(), Gate(), []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high * 0.5

    publisher = DiscoveryPublisher(
        recorder,
        MESSAGES,
        status_topic=NODE.status_topic,
        jitter_s=jitter_s,
        states=lambda: list(states),
        uniform=uniform,
        sleep=gate,
    )
    return publisher, recorder, gate, draws


async def settle(publisher: DiscoveryPublisher, count: int) -> None:
    """Wait (bounded) until ``count`` republishes have completed."""
    async with asyncio.timeout(5):
        while publisher.republished < count:
            await asyncio.sleep(0)


def discovery_sent(recorder: Recorder) -> list[DiscoveryMessage]:
    topics = {m.topic for m in MESSAGES}
    return [DiscoveryMessage.from_payload(t, p) for t, p, _ in recorder.sent if t in topics]


@sync
async def test_start_publishes_every_message_retained() -> None:
    publisher, recorder, _, _ = make()
    publisher.start()
    assert discovery_sent(recorder) == MESSAGES
    assert all(retain for _, _, retain in recorder.sent)


@sync
async def test_birth_republishes_after_jitter_then_states() -> None:
    publisher, recorder, gate, draws = make(jitter_s=3.0)
    publisher.on_status(b"online")
    await asyncio.sleep(0)
    assert draws == [(0.0, 3.0)]
    assert gate.delays == [1.5]
    assert recorder.sent == []  # nothing before the delay has passed
    gate.release.set()
    await settle(publisher, 1)
    assert discovery_sent(recorder) == MESSAGES
    assert recorder.sent[-1] == ("edge-agent/pi/summary", b"{}", True)


@sync
async def test_births_within_the_window_are_debounced_into_one_republish() -> None:
    publisher, recorder, gate, _ = make()
    for _ in range(5):
        publisher.on_status(b"online")
        await asyncio.sleep(0)
    assert len(gate.delays) == 1
    gate.release.set()
    await settle(publisher, 1)
    await asyncio.sleep(0.01)
    assert len(discovery_sent(recorder)) == len(MESSAGES)
    # A birth after the republish is a new Home Assistant start: answered again.
    publisher.on_status(b"online\n")
    await settle(publisher, 2)
    assert len(discovery_sent(recorder)) == 2 * len(MESSAGES)


@pytest.mark.parametrize("payload", [b"offline", b"", b"\xff", b"ONLINE!"])
@sync
async def test_other_status_payloads_are_ignored(payload: bytes) -> None:
    publisher, recorder, gate, _ = make()
    publisher.on_status(payload)
    await asyncio.sleep(0)
    assert gate.delays == []
    assert recorder.sent == []


@sync
async def test_zero_jitter_skips_the_random_draw() -> None:
    publisher, _, gate, draws = make(jitter_s=0.0)
    publisher.on_status(b"online")
    gate.release.set()
    await settle(publisher, 1)
    assert draws == []
    assert gate.delays == [0.0]


@sync
async def test_a_failing_state_callback_still_republishes_discovery() -> None:
    recorder = Recorder()

    def broken() -> list[tuple[str, bytes]]:
        raise RuntimeError("boom")

    publisher = DiscoveryPublisher(
        recorder, MESSAGES, status_topic=NODE.status_topic, jitter_s=0.0, states=broken
    )
    publisher.on_status(b"online")
    await settle(publisher, 1)
    assert discovery_sent(recorder) == MESSAGES


@sync
async def test_close_cancels_a_pending_republish() -> None:
    publisher, recorder, gate, _ = make()
    publisher.on_status(b"online")
    await asyncio.sleep(0)
    await asyncio.wait_for(publisher.close(), 5)
    gate.release.set()
    await asyncio.sleep(0.01)
    assert recorder.sent == []
    assert publisher.republished == 0
