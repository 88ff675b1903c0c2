"""End to end: real Mosquitto, the real CLI, the real tiny int4 Gemma 2 on onnxruntime."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker, Probe

pytestmark = pytest.mark.slow


def _facts(payload: bytes) -> dict[str, dict[str, float]]:
    return {f["id"]: f for f in json.loads(payload)["facts"]}


def test_events_become_a_summary_and_garbage_is_dead_lettered(
    broker: Broker, probe: Probe, tiny_model, tmp_path: Path
) -> None:
    config, node = write_config(
        tmp_path, broker, tiny_model.int4_dir, interval_s=1.0, window_s=600, max_new_tokens=12
    )
    probe.subscribe(f"edge-agent/{node}/#")
    agent = start_agent(config)
    try:
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)
        device = "living room/sensor"  # zigbee2mqtt friendly names may contain '/'
        probe.publish(f"zigbee2mqtt/{device}", json.dumps({"temperature": 21.5, "humidity": 40}))
        probe.publish(f"zigbee2mqtt/{device}", json.dumps({"temperature": 22.5}))

        def has_both(p: bytes) -> bool:
            return _facts(p).get(f"{device}.temperature", {}).get("count") == 2

        summary = json.loads(probe.wait_for(f"edge-agent/{node}/summary", has_both))
        temperature = _facts(json.dumps(summary).encode())[f"{device}.temperature"]
        assert (temperature["min"], temperature["max"], temperature["mean"]) == (21.5, 22.5, 22.0)
        assert temperature["unit"] == "°C"
        assert _facts(json.dumps(summary).encode())[f"{device}.humidity"]["last"] == 40
        assert summary["schema_version"] == 1
        assert summary["model"].startswith("gemma2")
        assert summary["tokens"]["new"] >= 1
        assert summary["latency_s"] > 0
        assert summary["window"]["end"] - summary["window"]["start"] == pytest.approx(600)
        assert "22.5 °C" in summary["title"]

        probe.publish(f"zigbee2mqtt/{device}", b"{not json")
        letter = json.loads(probe.wait_for(f"edge-agent/{node}/deadletter"))
        assert letter["reason"] == "not_json"
        assert letter["topic"] == f"zigbee2mqtt/{device}"
        assert letter["payload"] == "{not json"

        # The service survived the garbage: a later valid event still reaches a summary.
        probe.publish(f"zigbee2mqtt/{device}", json.dumps({"temperature": 30}))
        later = probe.wait_for(
            f"edge-agent/{node}/summary",
            lambda p: _facts(p).get(f"{device}.temperature", {}).get("max") == 30,
        )
        assert _facts(later)[f"{device}.temperature"]["count"] == 3
        assert agent.poll() is None

        # SIGKILL: no clean disconnect, so the broker publishes our last will.
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"offline", timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()


def test_sigterm_exits_cleanly_and_reports_offline(
    broker: Broker, probe: Probe, tiny_model, tmp_path: Path
) -> None:
    config, node = write_config(tmp_path, broker, tiny_model.int4_dir)
    probe.subscribe(f"edge-agent/{node}/availability")
    agent = start_agent(config)
    try:
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"offline", timeout=10)
        # Not a TTY: every line is JSON, paho's own logging included.
        lines = [json.loads(line) for line in config.with_suffix(".log").read_text().splitlines()]
        events = {(line.get("logger"), line["event"].split(" ")[0]) for line in lines}
        assert ("edge_agent.app", "agent_stopped") in events
        assert ("paho.mqtt", "Sending") in events
    finally:
        if agent.poll() is None:
            agent.kill()
