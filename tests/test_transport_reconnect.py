"""Reconnect timing and QoS 0 during an outage, against a real Mosquitto restarted in place."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.demo.broker import LocalMosquitto
from edge_agent.transport.mqtt import MqttOptions, MqttTransport
from edge_agent.transport.options import FIRST_RECONNECT_MAX_S


@pytest.fixture
def own_broker() -> Iterator[LocalMosquitto]:
    """A broker this test may stop and start again on the same port."""
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-reconnect-"))
    workdir.chmod(0o777)  # mosquitto started as root may write as its own user
    broker = LocalMosquitto(workdir)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def _options(broker: LocalMosquitto, tmp_path: Path) -> MqttOptions:
    node = uuid.uuid4().hex[:8]
    # The reconnect settings are left at their defaults: those are what is tested.
    return MqttOptions(
        host=broker.host,
        port=broker.port,
        client_id=f"ea-{node}",
        keepalive_s=10,
        availability_topic=f"ea/{node}/availability",
        subscriptions=(f"in/{node}/#",),
        outbox_path=tmp_path / "outbox.sqlite",
    )


async def _until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_the_first_reconnect_attempt_comes_within_half_a_second(
    own_broker: LocalMosquitto, tmp_path: Path
) -> None:
    opt = _options(own_broker, tmp_path)

    async def scenario() -> None:
        transport = MqttTransport(opt)
        await transport.connect()
        await asyncio.to_thread(own_broker.stop)
        await _until(lambda: not transport.connected)
        await asyncio.sleep(2.5)  # a few refused attempts, backing off
        await asyncio.to_thread(own_broker.start)
        await _until(lambda: transport.connected, timeout=opt.reconnect_max_s + 10)
        assert transport.reconnects_total == 1
        await transport.close()

    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    delays = [e["delay_s"] for e in logs if e["event"] == "mqtt_reconnect_scheduled"]
    failed = [e for e in logs if e["event"] == "mqtt_reconnect_failed"]
    assert len(delays) >= 3, delays  # the broker was away for 2.5 s
    assert delays[0] <= FIRST_RECONNECT_MAX_S
    assert len(failed) == len(delays) - 1
    # Then jittered exponential backoff: each delay within [0.5, 1] x min(cap, base * 2^n).
    for n, delay in enumerate(delays[1:]):
        ceiling = min(opt.reconnect_max_s, opt.reconnect_min_s * 2**n)
        assert ceiling / 2 - 0.01 <= delay <= ceiling + 0.01, (n, delays)


def test_qos0_publishes_during_an_outage_are_dropped_and_counted_not_stored(
    own_broker: LocalMosquitto, tmp_path: Path
) -> None:
    opt = _options(own_broker, tmp_path)

    async def scenario() -> None:
        transport = MqttTransport(opt)
        await transport.connect()
        await asyncio.to_thread(own_broker.stop)
        await _until(lambda: not transport.connected)
        for n in range(50):  # a summary streaming its pieces while the broker is away
            transport.publish("out/stream", f"piece {n}", qos=0, expiry_s=60)
        transport.publish("out/summary", "the summary", retain=True)  # QoS 1
        assert transport.outbox_size == 1
        assert transport.qos0_dropped_total == 50
        await asyncio.to_thread(own_broker.start)
        await _until(lambda: transport.connected and transport.outbox_size == 0)
        await transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
