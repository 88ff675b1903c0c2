"""Cardinality through the real service: RSS growth and ask round trip under N distinct names.

A fresh Mosquitto and a real ``edge-agent run`` (the model folder given) are started.
The ask round trip (publish with ``reply_to`` -> answer received) and the agent's RSS
are measured first with 20 devices, then again after ``count`` readings from ``count``
distinct zigbee2mqtt device names. With the default caps most of those names are
refused (``too_many_series``), which is the point: memory stays bounded and an ask
does not scale with the names ever seen.

:func:`ask_loop_ms` measures the part of an ask that runs on the event loop (the series
the question is about, their findings and prompt, the grounding check) in-process, with
the same names offered to a store with the default caps: the round trip also holds the
generation, which grows with the prompt, not with the names.
"""

from __future__ import annotations

import json
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from edge_agent.demo.broker import LocalMosquitto
from edge_agent.domain import SensorEvent
from edge_agent.facts import WindowStore
from edge_agent.llm.base import Generator
from edge_agent.narrator import Narrator, NarratorConfig, judge
from edge_agent.prompts import answer_prompt, relevant
from edge_agent.scope import AskScope
from edge_agent.transport.client_factory import ClientOptions, new_client
from edge_agent.worker import InferenceWorker


@dataclass(frozen=True, slots=True)
class NamesResult:
    """Before/after figures of one run."""

    count: int
    rss_before_mib: float
    rss_after_mib: float
    ask_before_ms: list[float]
    ask_after_ms: list[float]
    status: dict[str, Any]
    publish_s: float


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class _Client:
    def __init__(self, port: int) -> None:
        self.inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        opt = ClientOptions("127.0.0.1", port, f"bench-names-{uuid.uuid4().hex[:6]}", "3.1.1")
        self.client = new_client(opt, paho.Client, logs=False)
        self.client.max_inflight_messages_set(0)  # unlimited: none wait in paho
        self.client.max_queued_messages_set(0)
        self.client.on_message = lambda _c, _u, msg: self.inbox.put(msg)
        self.client.connect("127.0.0.1", port)
        # An asker that sends its next ask right after acknowledging an answer must not
        # hold the ask back (Nagle) until the broker ACKs that PUBACK: ~40 ms per ask.
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()

    def wait(self, topic: str, pred: Any = lambda _p: True, timeout: float = 120.0) -> bytes:
        deadline = time.monotonic() + timeout
        last = b""
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            if msg.topic == topic:
                last = bytes(msg.payload)
                if pred(msg.payload):
                    return last
        raise TimeoutError(f"nothing on {topic} in {timeout} s; last: {last[:400]!r}")

    def ask(self, node: str, n: int) -> list[float]:
        times = []
        for i in range(n):
            ident = f"bench-{i}"
            doc = {"id": ident, "q": "How warm is it?", "reply_to": "bench/answers"}
            started = time.perf_counter()
            self.client.publish(f"edge-agent/{node}/ask", json.dumps(doc), qos=1)
            self.wait("bench/answers", lambda p, i=ident: json.loads(p)["id"] == i)
            times.append((time.perf_counter() - started) * 1000)
        return times


def _publish_names(port: int, count: int, chunk: int = 500) -> None:
    """QoS 1 readings from ``count`` distinct names, by a client driven from this thread.

    paho's background thread was seen to stall with tens of thousands of publishes
    queued from another thread; looping it here, chunk by chunk, never does.
    """
    opt = ClientOptions("127.0.0.1", port, f"bench-names-pub-{uuid.uuid4().hex[:6]}", "3.1.1")
    pub = new_client(opt, paho.Client, logs=False)
    pub.max_inflight_messages_set(0)
    pub.connect("127.0.0.1", port)
    try:
        for first in range(0, count, chunk):
            infos = [
                pub.publish(f"zigbee2mqtt/dev-{i:06d}", b'{"temperature": 21}', qos=1)
                for i in range(first, min(first + chunk, count))
            ]
            deadline = time.monotonic() + 60
            while not all(info.is_published() for info in infos):
                if time.monotonic() > deadline:
                    raise TimeoutError("the broker did not acknowledge the readings")
                pub.loop(0.05)
    finally:
        pub.disconnect()


def bench_names(model: Path, count: int = 100_000, asks: int = 5) -> NamesResult:
    """Run the whole measurement; needs ``mosquitto`` on PATH and a model folder."""
    with tempfile.TemporaryDirectory(prefix="edge-agent-names-") as tmp:
        work = Path(tmp)
        # Mosquitto's default queue (1000 per client) drops what a slow consumer has not
        # taken yet; this measures memory and asks, not that limit.
        # As deploy/mosquitto/edge-agent.conf sets them: no queue limit, and no Nagle
        # delay (without it an answer can wait ~40 ms for the asker's delayed ACK).
        # As deploy/mosquitto/edge-agent.conf sets them: no queue limit, and no Nagle
        # delay (without it an answer can wait ~40 ms for the asker's delayed ACK).
        broker = LocalMosquitto(work, extra_config="max_queued_messages 0\nset_tcp_nodelay true\n")
        broker.start()
        node = f"names-{uuid.uuid4().hex[:6]}"
        config = work / "config.toml"
        config.write_text(
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nnode_id = "{node}"\n'
            f'outbox_path = "{work}/outbox.sqlite"\n[model]\npath = "{model}"\nthreads = 1\n'
            "[summary]\ninterval_s = 3600\nstatus_interval_s = 1.0\nmax_new_tokens = 8\n"
            "ask_max_new_tokens = 8\n[homeassistant]\nenabled = false\n"
            '[log]\nlevel = "error"\nformat = "json"\n'
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = _Client(broker.port)
        try:
            client.client.subscribe([(f"edge-agent/{node}/#", 1), ("bench/answers", 1)])
            client.wait(f"edge-agent/{node}/availability", lambda p: p == b"online", 300)
            for i in range(200):
                payload = json.dumps({"temperature": 20 + i % 7 * 0.1})
                client.client.publish(f"zigbee2mqtt/room{i % 20}", payload, qos=1)
            client.wait(f"edge-agent/{node}/status", lambda p: json.loads(p)["events_total"] >= 200)
            client.ask(node, 2)  # warm: first prompt, first generation
            before_ms = client.ask(node, asks)
            rss_before = _rss_mib(agent.pid)
            started = time.perf_counter()
            _publish_names(broker.port, count)
            total = 200 + count

            def done(p: bytes) -> bool:
                doc = json.loads(p)
                return int(doc["events_total"]) + int(doc["deadletters_total"]) >= total

            status = json.loads(client.wait(f"edge-agent/{node}/status", done, 900))
            publish_s = time.perf_counter() - started
            rss_after = _rss_mib(agent.pid)
            after_ms = client.ask(node, asks)
        finally:
            agent.terminate()
            agent.wait(60)
            client.client.loop_stop()
            broker.stop()
    return NamesResult(count, rss_before, rss_after, before_ms, after_ms, status, publish_s)


def ask_loop_ms(generator: Generator, names: int, repeats: int = 7) -> tuple[int, list[float]]:
    """(series kept, ms per ask on the event loop) after ``names`` distinct device names.

    The part of an ask that runs on the event loop, as the agent runs it: the series the
    question is about (:class:`AskScope`), their findings, the relevant ones, the prompt
    fitted to the context, then the grounding check of a text against every known name.
    """
    store = WindowStore(300, baseline_s=3600)
    now = 1.7e9
    for i in range(names):
        store.add(SensorEvent(f"dev-{i:06d}", "temperature", 21.0, now - 10 + i * 1e-6, "z"))
    narrator = Narrator(InferenceWorker(generator, 4), NarratorConfig(8, 8, 60.0))
    scope = AskScope(store, narrator.names)
    question = "How warm is it?"
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        material = scope.material(question, now)
        shown = relevant(question, narrator.findings(material.facts).items)
        prompt = answer_prompt(question, shown, style=generator.prompt_format, language="en")
        generator.count_tokens(generator.render(prompt.text))
        known = narrator.display_names(store.names)
        judge("It is 21.0 °C.", "eos", shown, prompt, language="en", known_names=known)
        times.append((time.perf_counter() - started) * 1000)
    return store.series_count, times


def render(result: NamesResult) -> str:
    """A short report."""
    s = result.status
    return "\n".join(
        [
            f"distinct names published: {result.count} in {result.publish_s:.1f} s",
            f"agent RSS: {result.rss_before_mib:.1f} -> {result.rss_after_mib:.1f} MiB "
            f"(+{result.rss_after_mib - result.rss_before_mib:.1f} MiB)",
            f"ask round trip before: median {statistics.median(result.ask_before_ms):.1f} ms, "
            f"max {max(result.ask_before_ms):.1f} ms",
            f"ask round trip after:  median {statistics.median(result.ask_after_ms):.1f} ms, "
            f"max {max(result.ask_after_ms):.1f} ms",
            f"status: events_total={s['events_total']} deadletters_total="
            f"{s['deadletters_total']} series_total={s.get('series_total')} "
            f"series_refused_total={s.get('series_refused_total')}",
        ]
    )
