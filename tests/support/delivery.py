"""A sequenced QoS 1 flow through the real agent, for the delivery tests and measurements.

A publisher sends ``seq <n>`` on ``zigbee2mqtt/seq`` at QoS 1, n = 1, 2, ... Not JSON,
so the agent answers each message it ingests with exactly one dead letter that echoes
the payload: the set of sequence numbers in the dead letters is the set of messages the
agent handled (and whose result reached the broker). An observer with a persistent
session collects them. Lost = sent minus seen; duplicates (QoS 1 is at-least-once:
a message being handled at a SIGKILL comes again) are counted, not failures.

Run as a script to measure (``--no-drop-in`` for Mosquitto's defaults)::

    python -m tests.support.delivery --scenario kill --rate 200 --outage 15
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.demo.broker import LocalMosquitto
from tests.support.agent import start_agent, stop_agent, write_config

REPO = Path(__file__).resolve().parents[2]
DROP_IN = REPO / "deploy" / "mosquitto" / "edge-agent.conf"
TOPIC = "zigbee2mqtt/seq"


@contextmanager
def own_broker(*, drop_in: bool = True) -> Iterator[LocalMosquitto]:
    """A Mosquitto that may be restarted on its port, with persistence and (by default)
    ``include_dir`` of a folder holding the shipped drop-in, as /etc/mosquitto/conf.d."""
    # Started as root, mosquitto may drop to its own user, which must write here.
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-delivery-"))
    workdir.chmod(0o777)
    extra = ""
    if drop_in:
        conf_d = workdir / "conf.d"
        conf_d.mkdir()
        shutil.copy(DROP_IN, conf_d / DROP_IN.name)
        extra = f"include_dir {conf_d}\n"
    broker = LocalMosquitto(workdir, extra_config=extra)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _client(broker: LocalMosquitto, client_id: str) -> paho.Client:
    """A v5 client with a persistent session that reconnects quickly by itself."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.reconnect_delay_set(0.1, 0.5)
    client.max_inflight_messages_set(100)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect(broker.host, broker.port, clean_start=False, properties=props)
    return client


class Observer:
    """Collects the sequence numbers echoed in the agent's dead letters."""

    def __init__(self, broker: LocalMosquitto, node: str) -> None:
        self.seen: Counter[int] = Counter()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = _client(broker, f"observer-{node}")
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.loop_start()
        self._client.subscribe(f"edge-agent/{node}/deadletter", qos=1)
        if not subscribed.wait(10):
            raise AssertionError("the observer's subscription was not acknowledged")

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        echo = json.loads(msg.payload)["payload"]
        if echo.startswith("seq "):
            with self._lock:
                self.seen[int(echo.removeprefix("seq "))] += 1

    def wait_for(self, total: int, timeout: float) -> None:
        """Until every number 1..total was seen, or ``timeout`` (then return anyway)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(self.seen[n] for n in range(1, total + 1)):
                    return
            time.sleep(0.2)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _seq(n: int) -> tuple[str, bytes]:
    return TOPIC, f"seq {n}".encode()


class Publisher:
    """Publishes ``message(1..total)`` (default ``seq <n>``) at ``rate`` per second at QoS 1
    on its own thread."""

    def __init__(
        self,
        broker: LocalMosquitto,
        node: str,
        total: int,
        rate: float,
        message: Callable[[int], tuple[str, bytes]] = _seq,
    ) -> None:
        self.total, self.rate, self._message = total, rate, message
        self.sent = 0
        self._client = _client(broker, f"sensor-{node}")
        # PUBACKs counted, not a set of message ids: paho's ids wrap at 65,535.
        self.acked = 0
        self._client.on_publish = self._on_publish
        # paho keeps QoS 1 messages made while the broker is down (no queue limit by
        # default) and sends them once it is back.
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="seq-publisher", daemon=True)

    def _on_publish(self, _c: paho.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        self.acked += 1  # only paho's network thread writes it

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        for n in range(1, self.total + 1):
            delay = started + n / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._client.publish(*self._message(n), qos=1)
            self.sent = n

    def finish(self, timeout: float) -> int:
        """Wait until all were sent and the broker acknowledged them; the count acked."""
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        # Not wait_for_publish()/is_published(): they raise for a message made while
        # disconnected (rc NO_CONN), which paho still sends after reconnecting.
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.acked

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass(frozen=True, slots=True)
class FlowResult:
    """What a sequenced flow measured."""

    sent: int
    acked_by_broker: int
    lost: list[int]
    duplicates: int
    reconnect_s: float | None
    """Agent side: from the broker being back to the agent's 'online' (broker restart)."""

    def summary(self) -> str:
        """One line for a person."""
        return (
            f"sent {self.sent}, broker acked {self.acked_by_broker}, lost {len(self.lost)}, "
            f"duplicates {self.duplicates}"
            + (
                f", agent back {self.reconnect_s:.2f} s after the broker"
                if self.reconnect_s
                else ""
            )
        )


def run_flow(
    broker: LocalMosquitto,
    model_dir: Path,
    workdir: Path,
    *,
    scenario: str,
    total: int,
    rate: float,
    outage_s: float,
) -> FlowResult:
    """Publish ``total`` at ``rate``; one third in, break things for ``outage_s``.

    ``scenario``: ``restart`` stops Mosquitto (SIGTERM: it saves its database) and starts
    it again on the same port; ``kill`` sends the agent SIGKILL and starts it again.
    """
    config, node = write_config(
        workdir, broker, model_dir, interval_s=3600, window_s=3600, max_new_tokens=4
    )
    quiet = {"EDGE_AGENT_LOG__LEVEL": "info"}  # not paho's four debug lines per message
    observer = Observer(broker, node)
    watcher = _client(broker, f"watch-{node}")
    online: list[float] = []

    def on_availability(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.payload == b"online":
            online.append(time.monotonic())

    watcher.on_message = on_availability
    watcher.loop_start()
    watcher.subscribe(f"edge-agent/{node}/availability", qos=1)
    agent = start_agent(config, env=quiet)
    publisher = Publisher(broker, node, total, rate)
    back: float | None = None
    try:
        _wait(lambda: bool(online), 120, "the agent did not come online")
        publisher.start()
        _wait(lambda: publisher.sent >= total // 3, 60, "the publisher stalled")
        if scenario == "restart":
            broker.stop()
            time.sleep(outage_s)
            before = len(online)
            broker.start()
            restarted = time.time()
            _wait(lambda: len(online) > before, 60, "the agent did not reconnect")
            back = _connected_after(config.with_suffix(".log"), restarted) - restarted
        elif scenario == "kill":
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            time.sleep(outage_s)
            agent = start_agent(config, env=quiet)
        else:
            raise ValueError(scenario)
        acked = publisher.finish(timeout=120)
        observer.wait_for(total, timeout=120)
    finally:
        publisher.close()
        observer.close()
        watcher.loop_stop()
        watcher.disconnect()
        stop_agent(agent)
    seen = observer.seen
    lost = [n for n in range(1, total + 1) if not seen[n]]
    duplicates = sum(c - 1 for c in seen.values() if c > 1)
    return FlowResult(publisher.sent, acked, lost, duplicates, back)


def _connected_after(log: Path, since: float) -> float:
    """When the agent's log says it connected, first time after ``since`` (epoch s)."""
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "mqtt_connected":
            at = datetime.fromisoformat(entry["timestamp"]).timestamp()
            if at >= since:
                return at
    raise AssertionError("no mqtt_connected after the broker restart in the agent's log")


def _wait(predicate: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def main() -> None:
    """Measure one scenario from the command line."""
    from edge_agent.export.tiny import build_tiny_gemma2, default_cache_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", choices=("restart", "kill"), required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--outage", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=45.0, help="length of the flow")
    parser.add_argument("--no-drop-in", action="store_true", help="Mosquitto's defaults")
    args = parser.parse_args()
    model = build_tiny_gemma2(default_cache_root(), progress=False).int4_dir
    with own_broker(drop_in=not args.no_drop_in) as broker, tempfile.TemporaryDirectory() as tmp:
        result = run_flow(
            broker, model, Path(tmp), scenario=args.scenario,
            total=int(args.rate * args.seconds), rate=args.rate, outage_s=args.outage,
        )  # fmt: skip
    label = "Mosquitto defaults" if args.no_drop_in else "with deploy/mosquitto/edge-agent.conf"
    print(f"{args.scenario}, {args.outage:g} s outage at {args.rate:g} msg/s, {label}: "
          f"{result.summary()}")  # fmt: skip


if __name__ == "__main__":
    main()
