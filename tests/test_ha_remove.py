"""``edge-agent ha remove`` on a real Mosquitto, plain and TLS: discovery first, then states."""

from __future__ import annotations

import queue
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edge_agent.connection import client_options
from edge_agent.ha.discovery import (
    HaNode,
    component_discovery,
    device_discovery,
    retained_state_topics,
)
from edge_agent.ha.wiring import build_node
from edge_agent.settings import Settings, load_settings
from edge_agent.transport.client_factory import close, connect_and_wait, new_client
from tests.support.broker import Broker, Probe
from tests.test_transport_tls import TlsBroker, tls_broker

__all__ = ["tls_broker"]  # the module fixture: a Mosquitto with a TLS listener


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
    node = build_node(s)
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
    # Only discovery that is retained is emptied: Home Assistant reads an empty device
    # topic as "remove every entity of this node id", whichever layout discovered them
    # ("conflicting MQTT discovery message" for each per-entity one).
    emptied_discovery = {t for t in empties if t.startswith(f"{node.discovery_prefix}/")}
    assert emptied_discovery == {m.topic for m in discovery}
    if layout == "device":
        # The device goes first, before any state ("homeassistant/button/..." sorts
        # before "homeassistant/device/...": the order must not come from sorting).
        assert empties[0] == node.device_config_topic
    else:
        assert any(t.startswith(f"{node.discovery_prefix}/button/") for t in empties)
    if layout == "both":
        # Per-entity topics own the entities in Home Assistant then: they go first.
        per_entity = {m.topic for m in component_discovery(node)}
        assert set(empties[: len(per_entity)]) == per_entity
        assert empties[len(per_entity)] == node.device_config_topic
    cleared = [line.removeprefix("cleared ") for line in result.stdout.splitlines()[:-1]]
    assert cleared == [t for t in empties if t in cleared]


def test_remove_clears_a_tls_broker_with_the_config_run_uses(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    """The same ``[mqtt.tls]`` block (CA and client certificate) as ``run``: ``ha remove``
    gets its client from the one factory, so it reaches the broker and clears it."""
    node_id = f"tls-{uuid.uuid4().hex[:8]}"
    config = tmp_path / f"{node_id}.toml"
    config.write_text(
        f'[mqtt]\nhost = "localhost"\nport = {tls_broker.port}\nnode_id = "{node_id}"\n'
        f'[mqtt.tls]\nenabled = true\nca_file = "{tls_broker.dir}/ca.pem"\n'
        f'cert_file = "{tls_broker.dir}/client.pem"\nkey_file = "{tls_broker.dir}/client.key"\n'
    )
    s = load_settings(config)
    node = build_node(s)
    seeded = {m.topic: m.to_payload() for m in device_discovery(node)}
    seeded |= {t: b'{"schema_version": 1}' for t in retained_state_topics(node)}
    seeded[node.topic("action/pending")] = b'{"schema_version": 1, "state": "none"}'
    assert _retained_over(s, node, seeded) == seeded

    result = _remove(config, "--settle-s", "0.2", "--sweep-s", "0.5")
    assert result.returncode == 0, result.stderr
    assert _retained_over(s, node) == {}
    cleared = {line.removeprefix("cleared ") for line in result.stdout.splitlines()[:-1]}
    assert set(seeded) <= cleared


def _retained_over(
    s: Settings, node: HaNode, publish: dict[str, bytes] | None = None
) -> dict[str, bytes]:
    """Publish ``publish`` retained, then what a new subscriber gets retained under our
    topics, over the TLS connection the settings describe (the project's client factory)."""
    client = new_client(client_options(s.mqtt, client_id_suffix="test"), paho.Client)
    found: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client.on_message = lambda _c, _u, m: found.put((m.topic, bytes(m.payload)))
    connect_and_wait(client, client_options(s.mqtt, client_id_suffix="test"))
    try:
        for topic, payload in (publish or {}).items():
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        client.subscribe([(node.device_config_topic, 1), (node.topic("#"), 1)])
        time.sleep(1.0)  # retained messages follow the SUBACK
    finally:
        close(client)
    retained: dict[str, bytes] = {}
    while not found.empty():
        topic, payload = found.get_nowait()
        retained[topic] = payload
    return retained
