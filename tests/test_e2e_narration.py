"""What a user reads, end to end: real CLI, real Mosquitto, the real tiny int4 model.

A zigbee2mqtt door reporting ``contact: true`` is closed. Whatever the model writes,
the published summary, its title and the answer to "Is the front door open?" never
call it open: text that does fails the grounding check and the fallback says closed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker, Probe

pytestmark = pytest.mark.slow

SUBSCRIPTION = """
[[sensors.subscriptions]]
topic = "zigbee2mqtt/#"
adapter = "zigbee2mqtt"
device_areas = { "front_door" = "hallway" }
"""


def test_a_closed_zigbee2mqtt_door_is_reported_closed(
    broker: Broker, probe: Probe, tiny_model, tmp_path: Path
) -> None:
    config, node = write_config(
        tmp_path,
        broker,
        tiny_model.int4_dir,
        extra=SUBSCRIPTION,
        interval_s=1.0,
        window_s=600,
        max_new_tokens=4,
        ask_max_new_tokens=4,
    )
    probe.subscribe(f"edge-agent/{node}/#")
    agent = start_agent(config)
    try:
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)
        probe.publish("zigbee2mqtt/front_door", json.dumps({"contact": True, "battery": 94}))
        summary = json.loads(
            probe.wait_for(
                f"edge-agent/{node}/summary/hallway",
                lambda p: "front_door.contact" in json.loads(p)["fact_ids"],
                timeout=60,
            )
        )
        assert summary["title"] == "Hallway: Front door closed"
        assert "open" not in summary["text"].lower()
        if summary["fallback"]:
            assert "Front door is closed." in summary["text"]
        home = json.loads(probe.wait_for(f"edge-agent/{node}/summary", timeout=30))
        assert "_" not in home["title"]
        probe.publish(f"edge-agent/{node}/ask", "Is the front door open?")
        answer = json.loads(probe.wait_for(f"edge-agent/{node}/answer", timeout=60))
        assert answer["facts"] == ["front_door.contact"]
        assert "open" not in answer["answer"].lower().replace("is the front door open", "")
        if answer["fallback"]:
            assert answer["answer"] == "No, front door is closed."
    finally:
        agent.kill()
        agent.wait(10)
