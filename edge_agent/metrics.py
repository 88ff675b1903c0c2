"""Prometheus metrics: one registry per agent, served on ``[metrics] listen``.

Two sources, so the shared code needs no counting of its own:
- results (summaries, answers, action decisions, dead letters) arrive as the canonical
  log lines of :mod:`edge_agent.results`, whatever the log level;
- levels and totals the agent already keeps (events, queue depth, outbox, broker
  connection, backend health) are read at scrape time by a custom collector.

Every family is prefixed ``edge_agent_``. The registry is the instance's own, not
prometheus_client's global one, so tests can build several.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

# Generation takes from under a second (a 270M model, a short answer) to a minute
# (a 2B model on a Pi, at the deadline).
_LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
_RESULTS = {"summary_published": "summary", "answer_published": "answer"}


@dataclass(frozen=True, slots=True)
class LiveSources:
    """Readings taken at scrape time from the running parts."""

    events_total: Callable[[], int]
    queue_depth: Callable[[], int]
    outbox_size: Callable[[], int]
    broker_connected: Callable[[], bool]
    broker_reconnects_total: Callable[[], int]
    backend_up: Callable[[], bool]
    backend_failures_total: Callable[[], int]
    backlog: Callable[[], Mapping[str, int]]
    """``merged_total`` and ``dropped_total`` of the inference backlog."""


class _Live(Collector):
    def __init__(self, sources: LiveSources) -> None:
        self._s = sources

    def collect(self) -> Iterable[Metric]:
        s = self._s
        backlog = s.backlog()
        yield _counter("events", "Sensor events ingested.", s.events_total())
        yield _gauge("queue_depth", "Generations waiting (not the running one).", s.queue_depth())
        yield _gauge("outbox_messages", "Publishes held until the broker acks.", s.outbox_size())
        yield _gauge("broker_connected", "1 while connected to the broker.", s.broker_connected())
        yield _counter("broker_reconnects", "Broker reconnects.", s.broker_reconnects_total())
        yield _gauge("backend_up", "1 while the model backend answers.", s.backend_up())
        yield _counter(
            "backend_failures", "Requests the model backend failed.", s.backend_failures_total()
        )
        yield _counter(
            "backlog_merged", "Requests superseded by a newer one.", backlog.get("merged_total", 0)
        )
        yield _counter(
            "backlog_dropped",
            "Requests dropped from a full backlog.",
            backlog.get("dropped_total", 0),
        )


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"edge_agent_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"edge_agent_{name}", doc, value=float(value))


class Metrics:
    """The agent's registry; :meth:`observe` takes canonical result lines."""

    def __init__(self, *, model: str, backend: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.summaries = Counter(
            "edge_agent_summaries",
            "Summaries published, by outcome (grounded/fallback) and fallback reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.answers = Counter(
            "edge_agent_answers",
            "Answers published, by outcome and fallback reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.actions = Counter(
            "edge_agent_actions",
            "Action decisions, by outcome (proposed, performed, rejected, failed, none).",
            ["outcome"],
            registry=r,
        )
        self.deadletters = Counter(
            "edge_agent_deadletters", "Payloads dead-lettered, by reason.", ["reason"], registry=r
        )
        self.latency = Histogram(
            "edge_agent_generation_seconds",
            "Time per generation that produced text, by kind (summary, answer, action).",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "edge_agent_generated_tokens",
            "New tokens generated, by kind; rate() over it is throughput.",
            ["kind"],
            registry=r,
        )
        self.tok_s = Gauge(
            "edge_agent_tokens_per_second",
            "New tokens per second of the last generation, by kind.",
            ["kind"],
            registry=r,
        )
        Info("edge_agent_model", "The model narrating.", registry=r).info(
            {"model": model, "backend": backend}
        )
        for outcome in ("grounded", "fallback"):
            for family in (self.summaries, self.answers):
                family.labels(outcome, "")
        self._server: Any = None

    def track(self, sources: LiveSources) -> None:
        """Read ``sources`` at every scrape."""
        self.registry.register(_Live(sources))

    def observe(self, event: str, fields: Mapping[str, Any]) -> None:
        """Count one canonical result line (see :mod:`edge_agent.results`)."""
        if event == "payload_rejected":
            self.deadletters.labels(str(fields.get("reason", ""))).inc()
            return
        if event == "action_decided":
            self.actions.labels(str(fields.get("outcome", ""))).inc()
            self._generation("action", fields)
            return
        kind = _RESULTS.get(event)
        if kind is None:
            return
        outcome = "fallback" if fields.get("fallback") else "grounded"
        reason = str(fields.get("reason") or "") if outcome == "fallback" else ""
        family = self.summaries if kind == "summary" else self.answers
        # A reason may carry detail ("grounding: ..."): its code is the label.
        family.labels(outcome, reason.split(":", 1)[0]).inc()
        self._generation(kind, fields)

    def _generation(self, kind: str, fields: Mapping[str, Any]) -> None:
        new, latency = fields.get("new_tokens"), fields.get("latency_s")
        if not isinstance(new, int) or new <= 0 or not isinstance(latency, int | float):
            return  # no text came (server down, superseded): not a generation's timing
        self.latency.labels(kind).observe(latency)
        self.tokens.labels(kind).inc(new)
        if latency > 0:
            self.tok_s.labels(kind).set(new / latency)

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on a daemon thread until :meth:`close`."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics_listening", host=host, port=port)

    def close(self) -> None:
        """Stop serving (the port is freed)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
