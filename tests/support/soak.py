"""A soak: zigbee2mqtt states at a steady rate through the real agent, counted at the end.

Devices ``zigbee2mqtt/soak_<i>`` each publish a state with four readings (temperature,
humidity, battery, link quality) at QoS 1, round-robin, at ``rate`` messages per second,
through a Mosquitto that uses the shipped drop-in. The agent's retained status
(``events_total``, ``queue_depth``) is sampled with its RSS (``/proc/<pid>/status``).
Missing = 4 x messages the broker acknowledged - events the agent counted; duplicates
(QoS 1 is at-least-once) would show as a negative number and are reported, not hidden.

Run as a script to measure::

    python -m tests.support.soak --rate 1000 --seconds 600
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho

from edge_agent.demo.broker import LocalMosquitto
from tests.support.agent import start_agent, stop_agent, write_config
from tests.support.delivery import Publisher, _client, _wait, own_broker

READINGS_PER_MESSAGE = 4


@dataclass
class Sample:
    """One look at the agent while the soak runs."""

    at_s: float
    sent: int
    events: int
    queue_depth: int
    rss_mib: float


@dataclass
class SoakResult:
    """What a soak measured."""

    sent: int
    acked_by_broker: int
    events: int
    deadletters: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def missing(self) -> int:
        """Readings acknowledged by the broker that the agent never counted."""
        return READINGS_PER_MESSAGE * self.acked_by_broker - self.events

    def summary(self) -> str:
        """Lines for a person."""
        rss = [s.rss_mib for s in self.samples]
        queue = max((s.queue_depth for s in self.samples), default=0)
        head = (
            f"sent {self.sent} messages, broker acked {self.acked_by_broker}, "
            f"events {self.events} of {READINGS_PER_MESSAGE * self.acked_by_broker} "
            f"(missing {self.missing}), dead letters {self.deadletters}, "
            f"max queue depth {queue}"
        )
        if not rss:
            return head
        return (
            f"{head}\nRSS MiB: first {rss[0]:.0f}, max {max(rss):.0f}, last {rss[-1]:.0f} "
            f"({len(rss)} samples)"
        )


class _StatusWatch:
    """The latest retained status of the agent."""

    def __init__(self, broker: LocalMosquitto, node: str) -> None:
        self.latest: dict[str, object] = {}
        self.count = 0
        self._client = _client(broker, f"status-{node}")
        self._client.on_message = self._on_message
        self._client.loop_start()
        self._client.subscribe(f"edge-agent/{node}/status", qos=1)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        self.latest = json.loads(msg.payload)
        self.count += 1

    def counter(self, name: str) -> int:
        value = self.latest.get(name)  # counters sit at the top level of the status
        return int(value) if isinstance(value, int) else 0

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _states(devices: int) -> Callable[[int], tuple[str, bytes]]:
    """The n-th zigbee2mqtt state, round-robin over ``devices``."""

    def state(n: int) -> tuple[str, bytes]:
        doc = {
            "temperature": round(20 + (n % 37) / 10, 1),
            "humidity": round(40 + (n % 53) / 10, 1),
            "battery": 90,
            "linkquality": 100 + n % 50,
        }
        return f"zigbee2mqtt/soak_{n % devices}", json.dumps(doc).encode()

    return state


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_soak(
    broker: LocalMosquitto,
    model_dir: Path,
    workdir: Path,
    *,
    rate: float,
    seconds: float,
    sample_s: float = 10.0,
    progress: bool = False,
) -> SoakResult:
    """Publish ``rate`` x ``seconds`` states, then wait for the agent to count them all."""
    config, node = write_config(
        workdir,
        broker,
        model_dir,
        interval_s=3600,
        status_interval_s=2,
        window_s=600,
        max_new_tokens=4,
    )
    quiet = {"EDGE_AGENT_LOG__LEVEL": "warning"}
    watch = _StatusWatch(broker, node)
    agent = start_agent(config, env=quiet)
    total = int(rate * seconds)
    devices = max(1, min(200, int(rate // 5)))  # each device every few seconds
    publisher = Publisher(broker, node, total, rate, _states(devices))
    samples: list[Sample] = []
    started = time.monotonic()

    def sample() -> None:
        samples.append(
            Sample(
                round(time.monotonic() - started, 1),
                publisher.sent,
                watch.counter("events_total"),
                int(str(watch.latest.get("queue_depth", 0) or 0)),
                _rss_mib(agent.pid),
            )
        )
        if progress:
            s = samples[-1]
            print(
                f"  {s.at_s:6.0f} s  sent {s.sent:>8}  events {s.events:>9}  "
                f"queue {s.queue_depth:>4}  RSS {s.rss_mib:6.0f} MiB",
                flush=True,
            )

    try:
        _wait(lambda: watch.count > 0, 120, "the agent published no status")
        publisher.start()
        next_sample = time.monotonic()
        while publisher.sent < total and agent.poll() is None:
            if time.monotonic() >= next_sample:
                sample()
                next_sample += sample_s
            time.sleep(0.2)
        acked = publisher.finish(timeout=120)
        expected = READINGS_PER_MESSAGE * acked
        deadline = time.monotonic() + 180
        while watch.counter("events_total") < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # one more status: duplicates, if any, would show
        sample()
        if agent.poll() is not None:
            raise AssertionError(f"the agent exited with {agent.returncode} during the soak")
        return SoakResult(
            publisher.sent,
            acked,
            watch.counter("events_total"),
            watch.counter("deadletters_total"),
            samples,
        )
    finally:
        publisher.close()
        watch.close()
        stop_agent(agent)


def main() -> None:
    """Measure one soak from the command line."""
    from edge_agent.export.tiny import build_tiny_gemma2, default_cache_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the flow")
    parser.add_argument("--model", type=Path, help="model folder (default: the tiny test model)")
    args = parser.parse_args()
    model = args.model or build_tiny_gemma2(default_cache_root(), progress=False).int4_dir
    print(f"soak: {args.rate:g} msg/s for {args.seconds:g} s, zigbee2mqtt states, QoS 1")
    with own_broker() as broker, tempfile.TemporaryDirectory() as tmp:
        result = run_soak(
            broker, model, Path(tmp), rate=args.rate, seconds=args.seconds, progress=True
        )
    print(result.summary())


if __name__ == "__main__":
    main()
