"""Prometheus metrics: the registry, the canonical result lines, and a real agent's /metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from edge_agent.metrics import LiveSources, Metrics
from edge_agent.results import record, results_context
from edge_agent.settings import MetricsSettings
from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker, Probe, free_port

FAMILIES = {
    "edge_agent_events",
    "edge_agent_deadletters",
    "edge_agent_summaries",
    "edge_agent_answers",
    "edge_agent_actions",
    "edge_agent_generation_seconds",
    "edge_agent_generated_tokens",
    "edge_agent_tokens_per_second",
    "edge_agent_queue_depth",
    "edge_agent_outbox_messages",
    "edge_agent_broker_connected",
    "edge_agent_broker_reconnects",
    "edge_agent_backend_up",
    "edge_agent_backend_failures",
    "edge_agent_backlog_merged",
    "edge_agent_backlog_dropped",
    "edge_agent_model_info",  # an Info is a gauge in the text format, named with _info
}


def samples(text: str) -> dict[str, list[Sample]]:
    """Family name -> samples, through prometheus_client's own parser."""
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float:
    every = [s for family in found.values() for s in family if s.name == name]
    matches = [s.value for s in every if labels.items() <= s.labels.items()]
    assert matches, (name, labels, every)
    return sum(matches)


def live(**overrides: Any) -> LiveSources:
    values: dict[str, Any] = {
        "events_total": lambda: 7,
        "queue_depth": lambda: 2,
        "outbox_size": lambda: 1,
        "broker_connected": lambda: True,
        "broker_reconnects_total": lambda: 3,
        "backend_up": lambda: False,
        "backend_failures_total": lambda: 4,
        "backlog": lambda: {"merged_total": 5, "dropped_total": 6},
    }
    return LiveSources(**{**values, **overrides})


def test_result_lines_and_live_readings_become_every_family() -> None:
    metrics = Metrics(model="openai:gemma@nas:8080", backend="openai")
    metrics.track(live())
    summary = {"fallback": False, "reason": "", "new_tokens": 20, "latency_s": 2.0}
    metrics.observe("summary_published", summary)
    metrics.observe("summary_published", {"fallback": True, "reason": "backend_unavailable"})
    metrics.observe("summary_published", {"fallback": True, "reason": "grounding: 42 not in facts"})
    metrics.observe("answer_published", {"fallback": False, "new_tokens": 8, "latency_s": 0.5})
    metrics.observe("action_decided", {"outcome": "proposed", "new_tokens": 30, "latency_s": 3})
    metrics.observe("payload_rejected", {"reason": "not_json"})
    metrics.observe("something_else", {"reason": "ignored"})
    found = samples(generate_latest(metrics.registry).decode())
    assert set(found) >= FAMILIES
    assert value(found, "edge_agent_summaries_total", outcome="grounded") == 1
    assert value(found, "edge_agent_summaries_total", reason="backend_unavailable") == 1
    assert value(found, "edge_agent_summaries_total", reason="grounding") == 1
    assert value(found, "edge_agent_answers_total", outcome="grounded") == 1
    assert value(found, "edge_agent_actions_total", outcome="proposed") == 1
    assert value(found, "edge_agent_deadletters_total", reason="not_json") == 1
    # Only generations that produced text are timed: 3, not the 2 fallbacks without any.
    assert value(found, "edge_agent_generation_seconds_count") == 3
    assert value(found, "edge_agent_generated_tokens_total", kind="summary") == 20
    assert value(found, "edge_agent_tokens_per_second", kind="summary") == 10
    assert value(found, "edge_agent_events_total") == 7
    assert value(found, "edge_agent_backend_up") == 0
    assert value(found, "edge_agent_broker_reconnects_total") == 3
    info = value(found, "edge_agent_model_info", model="openai:gemma@nas:8080", backend="openai")
    assert info == 1


def test_two_registries_do_not_share_counts() -> None:
    one, two = Metrics(model="a", backend="onnx"), Metrics(model="b", backend="onnx")
    one.observe("payload_rejected", {"reason": "not_json"})
    found = samples(generate_latest(two.registry).decode())
    assert not [s for s in found["edge_agent_deadletters"] if s.name.endswith("_total")]


def test_record_logs_once_and_feeds_the_observer_of_its_own_context() -> None:
    seen: dict[str, list[tuple[str, Mapping[str, Any]]]] = {"a": [], "b": []}

    async def agent(name: str) -> None:
        with results_context(lambda e, f: seen[name].append((e, f)), backend=name, model="m"):
            await asyncio.sleep(0)
            record(lambda *_a, **_k: None, "summary_published", area=name)

    async def both() -> None:
        await asyncio.wait_for(asyncio.gather(agent("a"), agent("b")), timeout=5)

    asyncio.run(both())
    assert seen["a"] == [("summary_published", {"backend": "a", "model": "m", "area": "a"})]
    assert seen["b"] == [("summary_published", {"backend": "b", "model": "m", "area": "b"})]
    with capture_logs() as logs:  # outside any context: logged as given, observed by none
        import structlog

        record(structlog.get_logger().info, "answer_published", id="q1")
    assert logs == [{"event": "answer_published", "id": "q1", "log_level": "info"}]


@pytest.mark.parametrize("listen", ["9464", "host:", ":9464", "127.0.0.1:70000"])
def test_a_bad_listen_address_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        MetricsSettings(listen=listen)


def test_listen_is_off_by_default_and_parses_ipv6() -> None:
    assert MetricsSettings().address is None
    assert MetricsSettings(listen="[::1]:9464").address == ("::1", 9464)


@pytest.mark.slow
def test_a_running_agent_serves_every_family(
    broker: Broker, probe: Probe, tiny_model: Any, tmp_path: Path
) -> None:
    port = free_port()
    config, node = write_config(
        tmp_path,
        broker,
        tiny_model.int4_dir,
        extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n',
        interval_s=1.0,
        max_new_tokens=8,
    )
    base = f"edge-agent/{node}"
    probe.subscribe(f"{base}/#")
    agent = start_agent(config)
    try:
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)
        probe.publish("zigbee2mqtt/kitchen sensor", json.dumps({"temperature": 21.5}))
        probe.publish("zigbee2mqtt/kitchen sensor", b"{not json")
        probe.publish(f"edge-agent/{node}/ask", "How warm is the kitchen?")
        deadline = time.monotonic() + 90
        # Polled from everything seen: wait_for would drop the other topic's message.
        while not (probe.payloads(f"{base}/summary") and probe.payloads(f"{base}/answer")):
            assert time.monotonic() < deadline, "no summary and answer"
            time.sleep(0.1)
        found: dict[str, list[Sample]] = {}
        while time.monotonic() < deadline:  # the summary's line may trail its publish
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert response.status_code == 200
            found = samples(response.text)
            if value(found, "edge_agent_answers_total") >= 1:
                break
            time.sleep(0.2)
        assert set(found) >= FAMILIES
        assert value(found, "edge_agent_events_total") == 1
        assert value(found, "edge_agent_deadletters_total", reason="not_json") == 1
        assert value(found, "edge_agent_summaries_total") >= 1
        assert value(found, "edge_agent_answers_total") == 1
        assert value(found, "edge_agent_broker_connected") == 1
        assert value(found, "edge_agent_backend_up") == 1
        assert value(found, "edge_agent_model_info", backend="onnx") == 1
        lines = [json.loads(ln) for ln in config.with_suffix(".log").read_text().splitlines()]
        canonical = [ln for ln in lines if ln["event"] == "summary_published"]
        assert canonical, "no summary_published line"
        for key in ("area", "facts", "prompt_tokens", "new_tokens", "latency_s", "outcome",
                    "reason", "model", "backend"):  # fmt: skip
            assert key in canonical[0], key
        assert canonical[0]["backend"] == "onnx"
        assert agent.poll() is None
    finally:
        agent.terminate()
        agent.wait(timeout=30)
