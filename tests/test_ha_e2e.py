"""Discovery over a real Mosquitto: retained at start, republished on HA's birth, and
cleared by the real ``edge-agent ha remove`` CLI."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.ha.discovery import (
    HaNode,
    component_discovery,
    device_discovery,
    discovery_topics,
    retained_state_topics,
)
from edge_agent.ha.publisher import DiscoveryPublisher
from edge_agent.ha.wiring import build_node
from edge_agent.settings import load_settings
from edge_agent.transport.mqtt import MqttOptions, MqttTransport
from tests.support.broker import Broker, broker, free_port

__all__ = ["broker"]  # the fixture, imported so this module also runs with --noconftest

ROOT = Path(__file__).resolve().parents[1]
JITTER_S = 0.5
SUMMARY = b'{"schema_version":1,"title":"All quiet"}'


def write_config(tmp_path: Path, host: str, port: int) -> tuple[Path, str]:
    node_id = f"ha-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{node_id}.toml"
    path.write_text(
        f'[mqtt]\nhost = "{host}"\nport = {port}\nnode_id = "{node_id}"\n'
        f"[homeassistant]\nbirth_jitter_s = {JITTER_S}\n"
        '[[sensors.subscriptions]]\ntopic = "zigbee2mqtt/#"\narea = "Hall"\n'
    )
    return path, node_id


def run_ha_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``edge-agent ha ...`` as a subprocess (through a two-line shim until it is wired)."""
    if "add_ha_commands" in (ROOT / "edge_agent" / "cli" / "__init__.py").read_text():
        argv = [sys.executable, "-m", "edge_agent", "ha", *args]
    else:
        shim = (
            "import argparse, sys\nfrom edge_agent.cli.ha import add_ha_commands\n"
            "p = argparse.ArgumentParser(prog='edge-agent')\nadd_ha_commands(p.add_subparsers())\n"
            "a = p.parse_args(sys.argv[1:])\nsys.exit(a.handler(a))\n"
        )
        argv = [sys.executable, "-c", shim, "ha", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ)
    )


def retained(broker: Broker, node: HaNode, wait_s: float = 1.0) -> dict[str, bytes]:
    """Every retained message under our discovery and state topics, seen by a new client."""
    seen: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"check-{uuid.uuid4().hex[:6]}")

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            seen.put((msg.topic, bytes(msg.payload)))

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        prefix = node.discovery_prefix
        client.subscribe(
            [
                (f"{prefix}/+/{node.node_id}/#", 1),
                (node.device_config_topic, 1),
                (node.topic("#"), 1),
            ]
        )
        time.sleep(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    found: dict[str, bytes] = {}
    while not seen.empty():
        topic, payload = seen.get()
        found[topic] = payload
    return found


async def serve_until_birth(broker: Broker, node: HaNode) -> float:
    """Connect, publish discovery, answer one simulated HA birth; returns the wait in s."""
    transport = MqttTransport(
        MqttOptions(
            host=broker.host,
            port=broker.port,
            client_id=f"edge-agent-{node.node_id}",
            keepalive_s=30,
            availability_topic=node.topic("availability"),
            subscriptions=(node.status_topic,),
        )
    )
    publisher = DiscoveryPublisher(
        transport.publish,
        device_discovery(node),
        status_topic=node.status_topic,
        jitter_s=JITTER_S,
        states=lambda: [(node.topic("summary"), SUMMARY)],
    )

    async def route() -> None:
        # What the lead's service does: hand <prefix>/status payloads to the publisher.
        async for message in transport.messages():
            if message.topic == publisher.status_topic:
                publisher.on_status(message.payload)

    async with asyncio.timeout(30):
        await transport.connect()
        router = asyncio.create_task(route())
        publisher.start()
        transport.publish(node.topic("summary"), SUMMARY, retain=True)
        # An older config's per-component discovery, left behind: remove must clear it too.
        for message in component_discovery(node)[:3]:
            transport.publish(message.topic, message.to_payload(), retain=True)

        probe = broker.client()
        try:
            await asyncio.to_thread(probe.subscribe, node.device_config_topic)
            first = await asyncio.to_thread(probe.wait_for, node.device_config_topic, timeout=10)
            assert first == device_discovery(node)[0].to_payload()
            await asyncio.to_thread(probe.subscribe, node.topic("summary"))
            await asyncio.to_thread(probe.wait_for, node.topic("summary"), timeout=10)

            await asyncio.to_thread(probe.publish, node.status_topic, "online")
            born = time.monotonic()
            again = await asyncio.to_thread(
                probe.wait_for, node.device_config_topic, timeout=JITTER_S + 10
            )
            waited = time.monotonic() - born
            assert again == first
            state = await asyncio.to_thread(probe.wait_for, node.topic("summary"), timeout=10)
            assert state == SUMMARY
            assert publisher.republished == 1
        finally:
            probe.close()
            router.cancel()
            await publisher.close()
            await transport.close()
    return waited


def test_discovery_is_retained_republished_on_birth_and_removed(
    broker: Broker, tmp_path: Path
) -> None:
    config, node_id = write_config(tmp_path, broker.host, broker.port)
    s = load_settings(config)
    node = build_node(s)
    assert node.node_id == node_id
    assert node.areas == ("Hall",)

    waited = asyncio.run(serve_until_birth(broker, node))
    print(f"birth -> republish received after {waited:.3f}s (jitter bound {JITTER_S}s)")

    before = retained(broker, node)
    assert before[node.device_config_topic] == device_discovery(node)[0].to_payload()
    assert before[node.topic("summary")] == SUMMARY
    assert before[node.topic("availability")] == b"offline"
    assert component_discovery(node)[0].topic in before

    result = run_ha_cli("remove", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert f"removed node '{node_id}'" in result.stdout

    after = retained(broker, node)
    assert after == {}, f"still retained: {sorted(after)}"
    cleared = {line.removeprefix("cleared ") for line in result.stdout.splitlines()}
    assert set(before) <= cleared
    assert set(retained_state_topics(node)) <= cleared
    # Discovery topics with nothing retained are left alone: an empty message there would
    # make Home Assistant warn (see tests/test_ha_remove_real.py).
    assert set(discovery_topics(node)) & cleared == set(discovery_topics(node)) & set(before)


def test_remove_reports_an_unreachable_broker(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, "127.0.0.1", free_port())
    result = run_ha_cli("remove", "-c", str(config))
    assert result.returncode == 1
    assert "cannot reach the MQTT broker" in result.stderr
