"""Parse → window → anomaly throughput on one core, against plain ``json.loads``.

The synthetic stream is zigbee2mqtt JSON from 50 devices at 20 messages/s of simulated
time (so a 300 s window holds ~6,000 readings), with an occasional CO2 spike.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

from edge_agent.anomalies import AnomalyDetector
from edge_agent.facts import WindowStore
from edge_agent.ingest import Payload, build_source

_METRICS = ("temperature", "co2", "humidity", "contact", "illuminance")


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Events per second for each stage, and the peer's messages per second."""

    messages: int
    events_per_s: dict[str, float]
    peer_msgs_per_s: float


def _stream(n: int, series: int, seed: int) -> list[tuple[str, Payload, float]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        device = i % series
        metric = _METRICS[device % len(_METRICS)]
        value: float | bool = {
            "temperature": 21 + rng.gauss(0, 0.3),
            "co2": 1500.0 if i % 997 == 0 else 600 + rng.gauss(0, 30),
            "humidity": 45 + rng.gauss(0, 2),
            "contact": rng.random() < 0.5,
            "illuminance": 300 + rng.gauss(0, 20),
        }[metric]
        raw = json.dumps({metric: value, "linkquality": 100}).encode()
        out.append((f"zigbee2mqtt/dev{device:02d}", Payload(raw), 1.7e9 + i * 0.05))
    return out


def _run(stream: list[tuple[str, Payload, float]], add: bool, check: bool) -> float:
    source = build_source("zigbee2mqtt/#", "zigbee2mqtt", "home")
    store = WindowStore(300)
    detector = AnomalyDetector(thresholds={"co2": {"min": None, "max": 1200}})
    events = 0
    started = time.perf_counter()
    for topic, payload, now in stream:
        for event in source.parse(topic, payload, now):
            events += 1
            if add:
                store.add(event)
            if check:
                detector.check(event, store)
    return events / (time.perf_counter() - started)


def bench_ingest(messages: int = 200_000, series: int = 50, repeats: int = 3) -> IngestResult:
    """Best of ``repeats`` for parse, parse+window, parse+window+anomaly; and the peer."""
    stream = _stream(messages, series, seed=0)
    stages = {
        "parse": (False, False),
        "parse+window": (True, False),
        "parse+window+anomaly": (True, True),
    }
    rates = {
        name: max(_run(stream, *flags) for _ in range(repeats)) for name, flags in stages.items()
    }
    raws = [bytes(p.raw) for _, p, _ in stream]
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for raw in raws:
            json.loads(raw)
        best = max(best, len(raws) / (time.perf_counter() - started))
    return IngestResult(messages, rates, best)


def render(result: IngestResult) -> str:
    """A small table with ratios against the peer."""
    lines = [
        f"ingest: {result.messages:,} zigbee2mqtt messages (2 events each), one core",
        f"{'stage':<24}{'events/s':>14}{'msgs/s':>12}{'vs json.loads':>16}",
    ]
    for name, rate in result.events_per_s.items():
        msgs = rate / 2
        lines.append(
            f"{name:<24}{rate:>14,.0f}{msgs:>12,.0f}{msgs / result.peer_msgs_per_s:>15.2f}x"
        )
    lines.append(
        f"{'peer: json.loads only':<24}{'':>14}{result.peer_msgs_per_s:>12,.0f}{1:>15.2f}x"
    )
    return "\n".join(lines)
