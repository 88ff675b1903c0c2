"""End to end through Mosquitto: sustained QoS 1 events into the agent's transport, parse, window.

Two consumers take N numbered zigbee2mqtt messages in turn, on one fresh broker, in one run:
- ours: :class:`MqttTransport` (manual acks after handling, persistent session) → adapter
  → windows, consumed with ``async for`` as the service does;
- the peer: a plain paho client on its network thread, handing payloads to ``json.loads``.

The load generator must not be the limit. Python paho publishers were: four of them took
most of the CPU the consumer needed on a 2-core machine. So one publisher process writes
pre-encoded MQTT 3.1.1 QoS 1 PUBLISH packets straight to a socket (at most ``_WINDOW``
unacknowledged), which costs a few percent of a core; the report prints its CPU share.
(``mosquitto_pub -l`` is no way out: the 2.0.11 one quits at the end of its input
before its messages are all through; only about a third of 100,000 arrived.)

"Sustained" means the publisher and the consumer run at the same time. By default the
publisher runs closed-loop: as fast as it can while staying at most ``_LEAD`` messages
ahead of the consumer, so the consumer's rate is its own and it never merely drains a
queue that was filled beforehand. With ``rate`` the publisher is paced open-loop at that
offered load instead. Either way the report says what share of the messages arrived while
the publisher was still publishing, and counts lost and duplicated numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import os
import queue
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

import paho.mqtt.client as paho

from edge_agent.demo.broker import LocalMosquitto
from edge_agent.facts import WindowStore
from edge_agent.ingest import Payload, build_source
from edge_agent.transport.client_factory import ClientOptions, close, connect_and_wait, new_client
from edge_agent.transport.mqtt import MqttOptions, MqttTransport

_WINDOW = 1_000  # publishes the load generator leaves unacknowledged by the broker
_LEAD = 5_000  # closed loop: how far the publisher may run ahead of the consumer
_IDLE_S = 20.0  # a consumer (or publisher) that sees no progress this long gives up


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What the load generator did while one consumer ran."""

    published: int
    msgs_per_s: float
    cpu_share: float  # of one core, while publishing
    end: float  # time.time() of the last PUBACK


@dataclass(frozen=True, slots=True)
class ConsumerResult:
    """What one consumer received, and the load it was under."""

    name: str
    received: int
    lost: int
    duplicates: int
    msgs_per_s: float  # distinct messages, first to last
    concurrent: float  # share that arrived before the publisher's last PUBACK
    cpu_share: float  # of one core, first to last message (all threads of the consumer)
    load: LoadResult


# --- the load generator: raw MQTT 3.1.1 on a socket, in its own process ----------------


def _packet(first_byte: int, body: bytes) -> bytes:
    """One MQTT control packet: fixed header with the variable-length remaining length."""
    header, n = bytearray([first_byte]), len(body)
    while True:
        n, digit = divmod(n, 128)
        header.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(header) + body


def _utf8(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def _publish_packets(topic: str, total: int) -> list[bytes]:
    """QoS 1 PUBLISH packets with packet ids 1..65535 in turn (≤ _WINDOW are in flight)."""
    head = _utf8(topic.encode())
    return [
        _packet(
            0x32,  # PUBLISH, QoS 1
            head
            + struct.pack("!H", seq % 65_535 + 1)
            + json.dumps({"seq": seq, "temperature": 20 + seq % 7}).encode(),
        )
        for seq in range(total)
    ]


def _connect_raw(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    variable = _utf8(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60)  # 3.1.1, clean
    sock.sendall(_packet(0x10, variable + _utf8(client_id.encode())))
    if sock.recv(4) != b"\x20\x02\x00\x00":
        raise RuntimeError("the broker refused the load generator's CONNECT")
    sock.setblocking(False)
    return sock


def _publisher(port: int, topic: str, total: int, rate: float, progress: _Count) -> LoadResult:
    """Publish ``total`` messages and say how it went.

    Closed loop (``rate`` 0): stay at most ``_LEAD`` ahead of ``progress`` (the count the
    consumer has received). Open loop: message i goes out no earlier than i / rate s.
    """
    packets = _publish_packets(topic, total)  # before the clock starts
    sock = _connect_raw(port, f"bench-load-{uuid.uuid4().hex[:6]}")
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    sent = acked = 0
    out, acks = b"", b""
    wall0, cpu0 = time.time(), time.process_time()
    seen, idle_since = -1, time.monotonic()
    while acked < total:
        limit = min(total, acked + _WINDOW)
        if rate:
            limit = min(limit, int((time.time() - wall0) * rate) + 1)
        else:
            limit = min(limit, progress.get() + _LEAD)
        if not out and sent < limit:
            out, sent = b"".join(packets[sent:limit]), limit
        if progress.get() != seen:
            seen, idle_since = progress.get(), time.monotonic()
        elif time.monotonic() - idle_since > _IDLE_S:
            break  # the consumer stopped; it reports the loss
        # Nothing to write: wake for PUBACKs, or in 2 ms to look at progress/pacing
        # (polling that rarely costs nothing measurable, unlike spinning).
        selector.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
        for _key, events in selector.select(None if out else 0.002):
            if events & selectors.EVENT_WRITE:
                with contextlib.suppress(BlockingIOError):
                    out = out[sock.send(out) :]
            if events & selectors.EVENT_READ:
                data = sock.recv(65_536)
                if not data:
                    raise RuntimeError("the broker closed the load generator's connection")
                acks += data
                whole = len(acks) // 4  # PUBACK: 0x40 0x02 id id
                if acks[0 : whole * 4 : 4].count(0x40) != whole:
                    raise RuntimeError("the broker sent the load generator something odd")
                acked, acks = acked + whole, acks[whole * 4 :]
    wall, cpu = time.time() - wall0, time.process_time() - cpu0
    sock.setblocking(True)
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    return LoadResult(
        acked, acked / wall if wall else 0.0, cpu / wall if wall else 0.0, wall0 + wall
    )


def _publisher_main(argv: list[str]) -> None:
    """Entry point of the publisher process: port topic total rate progress-file."""
    port, topic, total, rate, path = argv
    with _Count(Path(path)) as progress:
        result = _publisher(int(port), topic, int(total), float(rate), progress)
    print(json.dumps(asdict(result)), flush=True)


class _Count:
    """An int64 in a small shared file: the consumer writes it, the publisher reads it.

    A file mapping rather than multiprocessing: the publisher is a plain subprocess, so
    the bench does not depend on how (or whether) the caller's main module is guarded.
    """

    def __init__(self, path: Path) -> None:
        self._file = path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), 8)
        self._value = 0

    def __enter__(self) -> _Count:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._map.close()
        self._file.close()

    def bump(self) -> None:
        self._value += 1
        struct.pack_into("q", self._map, 0, self._value)

    def get(self) -> int:
        value: int = struct.unpack_from("q", self._map, 0)[0]
        return value


class _Load:
    """The publisher process for one consumer, and the count that paces it."""

    def __init__(self, port: int, topic: str, total: int, rate: float, workdir: Path) -> None:
        path = workdir / f"progress-{uuid.uuid4().hex[:6]}"
        path.write_bytes(bytes(8))
        self.progress = _Count(path)
        code = (
            "import sys; from edge_agent.bench.broker import _publisher_main as m; m(sys.argv[1:])"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, str(port), topic, str(total), str(rate), str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def result(self) -> LoadResult:
        """Wait for the publisher's figures (zeros if it failed: its traceback is on stderr)."""
        try:
            out, _ = self._proc.communicate(timeout=_IDLE_S * 2)
            return LoadResult(**json.loads(out.strip().splitlines()[-1]))
        except (subprocess.TimeoutExpired, ValueError, IndexError, TypeError):
            self._proc.kill()
            self._proc.wait()
            return LoadResult(0, 0.0, 0.0, 0.0)
        finally:
            self.progress.__exit__()


class _Tally:
    """Distinct and duplicate sequence numbers, arrival times and the consumer's CPU."""

    def __init__(self, total: int, progress: _Count) -> None:
        self._total = total
        self._seen = bytearray(total)
        self._progress = progress
        self.unique = self.duplicates = 0
        self.times = array("d")
        self._cpu0 = self._cpu1 = 0.0

    def add(self, seq: int, now: float) -> None:
        if not self.times:
            self._cpu0 = time.process_time()
        self.times.append(now)
        self._progress.bump()
        if 0 <= seq < self._total:
            if self._seen[seq]:
                self.duplicates += 1
            else:
                self._seen[seq] = 1
                self.unique += 1

    def stop(self) -> None:
        """Call right after the last message: the end of the consumer's CPU time."""
        self._cpu1 = time.process_time()

    def result(self, name: str, load: LoadResult) -> ConsumerResult:
        times = self.times
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        cpu = self._cpu1 - self._cpu0
        concurrent = sum(1 for t in times if t <= load.end) / len(times) if times else 0.0
        return ConsumerResult(
            name,
            self.unique,
            self._total - self.unique,
            self.duplicates,
            self.unique / span if span else 0.0,
            concurrent,
            cpu / span if span else 0.0,
            load,
        )


# --- the consumers ------------------------------------------------------------------


async def _ours(port: int, total: int, rate: float, workdir: Path) -> ConsumerResult:
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
    messages = transport.messages()
    # The subscription is live once a probe comes back; only then start the load. The
    # probe comes from another client: ours subscribes with No Local (MQTT 5), so the
    # broker never hands it its own publishes.
    await asyncio.to_thread(_probe, port, topic)
    await asyncio.wait_for(anext(messages), _IDLE_S)
    load = _Load(port, topic, total, rate, workdir)
    tally = _Tally(total, load.progress)
    watchdog = asyncio.create_task(_close_when_idle(transport, tally))
    async for message in messages:
        now = time.time()
        seq = -1
        for event in source.parse(message.topic, Payload(message.payload), now):
            store.add(event)
            if event.metric == "seq":
                seq = int(event.value)
        tally.add(seq, now)
        if tally.unique >= total:
            break
    tally.stop()
    result = tally.result("edge-agent transport+parse+window", load.result())
    watchdog.cancel()
    await transport.close()
    return result


def _probe(port: int, topic: str) -> None:
    """Publish one probe reading on ``topic`` from a short-lived client of its own."""
    opt = ClientOptions("127.0.0.1", port, f"probe-{uuid.uuid4().hex[:6]}")
    client = new_client(opt, paho.Client, logs=False)
    connect_and_wait(client, opt)
    try:
        client.publish(topic, b'{"probe": 1}', qos=1).wait_for_publish(_IDLE_S)
    finally:
        close(client)


async def _close_when_idle(transport: MqttTransport, tally: _Tally) -> None:
    """End ``messages()`` when nothing has arrived for ``_IDLE_S``: the rest is lost."""
    before = -1
    while len(tally.times) != before:
        before = len(tally.times)
        await asyncio.sleep(_IDLE_S)
    await transport.close()


def _peer(port: int, total: int, rate: float, workdir: Path) -> ConsumerResult:
    node = uuid.uuid4().hex[:6]
    topic = f"zigbee2mqtt/bench-{node}"
    inbox: queue.Queue[bytes] = queue.Queue()
    # From the one factory, but without paho's logger hook: the peer stays plain paho.
    client = new_client(
        ClientOptions("127.0.0.1", port, f"peer-{node}", protocol="5"), paho.Client, logs=False
    )
    client.on_message = lambda _c, _u, m: inbox.put(bytes(m.payload))
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    subscribed.wait(10)
    load = _Load(port, topic, total, rate, workdir)
    tally = _Tally(total, load.progress)
    while tally.unique < total:
        try:
            body = inbox.get(timeout=_IDLE_S)
        except queue.Empty:
            break
        tally.add(int(json.loads(body)["seq"]), time.time())
    tally.stop()
    result = tally.result("peer: plain paho + json.loads", load.result())
    client.disconnect()
    client.loop_stop()
    return result


def bench_broker(total: int = 100_000, rate: float = 0.0) -> list[ConsumerResult]:
    """Run the peer, then ours, against one fresh local Mosquitto; ``rate`` 0 = closed loop."""
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as tmp:
        workdir = Path(tmp)
        # No broker-side caps, so any loss is ours, not the broker's queue limit.
        broker = LocalMosquitto(
            workdir, extra_config="max_queued_messages 0\nmax_inflight_messages 0\n"
        )
        broker.start()
        try:
            peer = _peer(broker.port, total, rate, workdir)
            ours = asyncio.run(_ours(broker.port, total, rate, workdir))
        finally:
            broker.stop()
    return [ours, peer]


def render(results: list[ConsumerResult], total: int, rate: float = 0.0) -> str:
    """What the load was, then a table with the ratio against the peer (the last row)."""
    pacing = (
        f"paced open-loop at {rate:,.0f} msgs/s"
        if rate
        else f"closed-loop: as fast as it can, at most {_LEAD:,} ahead of the consumer"
    )
    peer = results[-1]
    lines = [
        f"load: {total:,} QoS 1 messages per consumer from 1 publisher process (pre-encoded "
        f"packets on a raw socket, ≤{_WINDOW:,} unacked),",
        f"  {pacing}; it publishes while the consumer receives (sustained).",
        f"  during pub = share received before the publisher's last PUBACK; cpu = share of "
        f"one core ({os.cpu_count()} CPUs here).",
        f"{'consumer':<34}{'received':>9}{'lost':>9}{'dup':>5}{'msgs/s':>9}{'ratio':>7}"
        f"{'during pub':>11}{'cpu':>6}{'pub msgs/s':>11}{'pub cpu':>8}",
    ]
    for r in results:
        ratio = r.msgs_per_s / peer.msgs_per_s if peer.msgs_per_s else 0.0
        lines.append(
            f"{r.name:<34}{r.received:>9,}{r.lost:>9,}{r.duplicates:>5,}{r.msgs_per_s:>9,.0f}"
            f"{ratio:>6.2f}x{r.concurrent:>10.0%} {r.cpu_share:>5.0%}"
            f"{r.load.msgs_per_s:>11,.0f}{r.load.cpu_share:>8.0%}"
        )
    return "\n".join(lines)
