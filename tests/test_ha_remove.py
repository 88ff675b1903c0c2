"""``edge-agent ha remove`` on a real Mosquitto: discovery first, then the state topics."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edge_agent.ha.discovery import (
    component_discovery,
    device_discovery,
    retained_state_topics,
)
from edge_agent.ha.wiring import build_node
from edge_agent.settings import load_settings
from tests.support.broker import Broker, Probe


def _config(tmp_path: Path, broker: Broker) -> tuple[Path, str]:
    node_id = f"rm-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{node_id}.toml"
    path.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nnode_id = "{node_id}"\n'
        '[[sensors.subscriptions]]\ntopic = "zigbee2mqtt/#"\narea = "Hall"\n'
    )
    return path, node_id


def _remove(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "ha", "remove", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("layout", ["device", "component", "both"])
def test_discovery_is_removed_before_the_state_topics_are_cleared(
    broker: Broker, probe: Probe, tmp_path: Path, layout: str
) -> None:
    config, node_id = _config(tmp_path, broker)
    s = load_settings(config)
    node = build_node(s.mqtt, s.homeassistant, s.sensors.subscriptions, s.model)
    discovery = []
    if layout in ("device", "both"):
        discovery += device_discovery(node)
    if layout in ("component", "both"):
        discovery += component_discovery(node)
    states = retained_state_topics(node)
    # What a running agent leaves behind: discovery, then states that entities read.
    for message in discovery:
        probe.publish(message.topic, message.to_payload(), retain=True)
    for topic in states:
        probe.publish(topic, b'{"schema_version": 1}', retain=True)
    # A stray retained topic under ours (an area no longer configured) goes too.
    stray = node.topic("summary/old-area")
    probe.publish(stray, b'{"schema_version": 1}', retain=True)

    watcher = Probe(broker.host, broker.port)
    try:
        watcher.subscribe(f"{node.discovery_prefix}/#")
        watcher.subscribe(f"edge-agent/{node_id}/#")
        watcher.seen.clear()  # the retained copies delivered on subscribe
        result = _remove(config, "--settle-s", "0.2", "--sweep-s", "0.3")
        assert result.returncode == 0, result.stderr
        watcher.wait_for(states[-1], lambda p: p == b"", timeout=10)
        empties = [m.topic for m in watcher.seen if m.payload == b""]
    finally:
        watcher.close()

    ours = {m.topic for m in discovery} | set(states) | {stray}
    assert ours <= set(empties)
    is_discovery = [t.startswith(f"{node.discovery_prefix}/") for t in empties]
    # Every discovery topic is emptied before the first state topic: Home Assistant
    # removes the entities before anything they read goes away.
    assert is_discovery == sorted(is_discovery, reverse=True), empties
    # The device goes first, before any per-entity topic ("homeassistant/button/..."
    # sorts before "homeassistant/device/...": the order must not come from sorting).
    assert empties[0] == node.device_config_topic
    assert any(t.startswith(f"{node.discovery_prefix}/button/") for t in empties)
    cleared = [line.removeprefix("cleared ") for line in result.stdout.splitlines()[:-1]]
    assert cleared == [t for t in empties if t in cleared]
