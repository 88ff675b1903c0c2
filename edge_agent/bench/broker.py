"""End to end through Mosquitto: QoS 1 events into the agent's transport, parse and window.

Publishers in separate processes send N numbered zigbee2mqtt messages at QoS 1. Two
consumers take them in turn, on the same broker, in the same run:
- ours: :class:`MqttTransport` (manual acks, persistent session) → adapter → window;
- the peer: a plain paho client on its network thread with ``json.loads``.
Each reports messages/s from first to last message, and how many numbers never arrived.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import queue
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.demo.broker import LocalMosquitto
from edge_agent.facts import WindowStore
from edge_agent.ingest import Payload, build_source
from edge_agent.transport.mqtt import MqttOptions, MqttTransport

_PUBLISHERS = 4
_IDLE_S = 20.0  # a consumer that hears nothing this long has lost the rest


@dataclass(frozen=True, slots=True)
class ConsumerResult:
    """What one consumer received."""

    name: str
    received: int
    lost: int
    msgs_per_s: float


def _publish_share(port: int, topic: str, index: int, total: int) -> None:
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    ready = threading.Event()
    client.on_connect = lambda *_a: ready.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.wait(10)
    infos = []
    for sent, seq in enumerate(range(index, total, _PUBLISHERS)):
        body = json.dumps({"seq": seq, "temperature": 20 + seq % 7}).encode()
        infos.append(client.publish(topic, body, qos=1))
        if sent >= 1000:  # keep paho's own queue short
            infos[sent - 1000].wait_for_publish(120)
    for info in infos[-1000:]:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def _publish(port: int, topic: str, total: int) -> list[multiprocessing.Process]:
    procs = [
        multiprocessing.Process(target=_publish_share, args=(port, topic, i, total))
        for i in range(_PUBLISHERS)
    ]
    for proc in procs:
        proc.start()
    return procs


async def _ours(port: int, total: int, workdir: Path) -> ConsumerResult:
    node = uuid.uuid4().hex[:6]
    topic = f"zigbee2mqtt/bench-{node}"
    transport = MqttTransport(
        MqttOptions(
            host="127.0.0.1",
            port=port,
            client_id=f"bench-{node}",
            keepalive_s=30,
            availability_topic=f"bench/{node}/availability",
            subscriptions=(topic,),
            outbox_path=workdir / f"{node}.sqlite",
        )
    )
    await transport.connect()
    source = build_source("zigbee2mqtt/#", "zigbee2mqtt", None)
    store = WindowStore(300)
    procs = _publish(port, topic, total)
    seen: set[int] = set()
    first = last = 0.0
    messages = transport.messages()
    while len(seen) < total:
        try:
            message = await asyncio.wait_for(anext(messages), _IDLE_S)
        except TimeoutError:
            break
        last = time.perf_counter()
        first = first or last
        for event in source.parse(message.topic, Payload(message.payload), time.time()):
            store.add(event)
            if event.metric == "seq":
                seen.add(int(event.value))
    await transport.close()
    for proc in procs:
        proc.join()
    return ConsumerResult(
        "edge-agent transport+parse+window",
        len(seen),
        total - len(seen),
        len(seen) / (last - first) if last > first else 0.0,
    )


def _peer(port: int, total: int) -> ConsumerResult:
    node = uuid.uuid4().hex[:6]
    topic = f"zigbee2mqtt/bench-{node}"
    inbox: queue.Queue[bytes] = queue.Queue()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"peer-{node}",
        protocol=paho.MQTTv5,
    )
    client.on_message = lambda _c, _u, m: inbox.put(bytes(m.payload))
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    subscribed.wait(10)
    procs = _publish(port, topic, total)
    seen: set[int] = set()
    first = last = 0.0
    while len(seen) < total:
        try:
            body = inbox.get(timeout=_IDLE_S)
        except queue.Empty:
            break
        last = time.perf_counter()
        first = first or last
        seen.add(int(json.loads(body)["seq"]))
    client.disconnect()
    client.loop_stop()
    for proc in procs:
        proc.join()
    return ConsumerResult(
        "peer: plain paho + json.loads",
        len(seen),
        total - len(seen),
        len(seen) / (last - first) if last > first else 0.0,
    )


def bench_broker(total: int = 100_000) -> list[ConsumerResult]:
    """Run the peer, then ours, against one fresh local Mosquitto."""
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as tmp:
        workdir = Path(tmp)
        # No broker-side caps, so any loss is ours, not the broker's queue limit.
        broker = LocalMosquitto(
            workdir, extra_config="max_queued_messages 0\nmax_inflight_messages 0\n"
        )
        broker.start()
        try:
            peer = _peer(broker.port, total)
            ours = asyncio.run(_ours(broker.port, total, workdir))
        finally:
            broker.stop()
    return [ours, peer]


def render(results: list[ConsumerResult]) -> str:
    """A small table with the ratio against the peer."""
    peer = results[-1]
    lines = [f"{'consumer':<36}{'received':>10}{'lost':>7}{'msgs/s':>10}{'ratio':>8}"]
    for r in results:
        lines.append(
            f"{r.name:<36}{r.received:>10,}{r.lost:>7,}{r.msgs_per_s:>10,.0f}"
            f"{r.msgs_per_s / peer.msgs_per_s if peer.msgs_per_s else 0:>7.2f}x"
        )
    return "\n".join(lines)
