"""``edge-agent ha remove`` against a real Home Assistant: the device goes, the log stays clean.

A real Home Assistant 2025.4.4 (the cached venv of ``test_ha_validate``, see
:mod:`tests.support.hass`) discovers what an agent leaves retained on the broker: its
discovery (each layout, and both at once), its state topics with our codecs' payloads
and the pending-action document; or what the real ``edge-agent run`` published. Then
the real ``edge-agent ha remove`` CLI runs against the same broker, and:

* Home Assistant logs no warning or error (no "'value_json' is undefined", "Erroneous
  JSON" or "conflicting MQTT discovery message");
* the entities and the device are gone from HA's registries, states and MQTT
  discovery's bookkeeping;
* nothing of ours stays retained on the broker.

A control test empties the same topics all at once in sort order, as the removal that
issue #16 found did, and sees Home Assistant log exactly those errors.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.export.tiny import TinyModel
from edge_agent.ha.discovery import (
    HaNode,
    component_discovery,
    components,
    device_discovery,
)
from edge_agent.ha.wiring import build_node
from edge_agent.settings import load_settings
from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker, Probe
from tests.support.hass import HomeAssistant, Snapshot, problems, with_frontend
from tests.test_ha_e2e import retained, run_ha_cli
from tests.test_ha_validate import ha_python, ha_venv, samples

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

# Loggers that speak about MQTT discovery and entities: at start-up HA also logs notes
# about this machine (no ffmpeg, no libturbojpeg, pip skipped) that are not ours.
OURS = (
    "[homeassistant.components.mqtt",
    "[homeassistant.helpers.template",
    "[homeassistant.helpers.entity",
)


@pytest.fixture(scope="module")
def hass(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    """One real Home Assistant for the module, on the session's broker."""
    python = ha_python()
    instance = HomeAssistant(
        with_frontend(ha_venv(python)), tmp_path_factory.mktemp("hass"), broker.host, broker.port
    )
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def _config(tmp_path: Path, broker: Broker) -> tuple[Path, HaNode]:
    node_id = f"rm-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{node_id}.toml"
    path.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nnode_id = "{node_id}"\n'
        '[[sensors.subscriptions]]\ntopic = "zigbee2mqtt/kitchen/#"\narea = "Kitchen"\n'
        '[[sensors.subscriptions]]\ntopic = "zigbee2mqtt/living/#"\narea = "Living Room"\n'
    )
    s = load_settings(path)
    node = build_node(s)
    return path, node


def _ours(snap: Snapshot, node: HaNode) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """This node's entities and devices in HA's registries."""
    entities = [e for e in snap["entities"] if e["unique_id"].startswith(f"{node.node_id}_")]
    devices = [
        d for d in snap["devices"] if ["mqtt", f"edge_agent_{node.node_id}"] in d["identifiers"]
    ]
    return entities, devices


def _leave_behind(probe: Probe, node: HaNode, layout: str) -> None:
    """What a running agent leaves retained: discovery, states, the pending action."""
    messages = device_discovery(node) if layout == "device" else component_discovery(node)
    for message in messages:
        probe.publish(message.topic, message.to_payload(), retain=True)
    for topic, payload in samples(node).items():
        if topic != node.topic("action/event") and topic != node.topic("anomaly"):
            probe.publish(topic, payload, retain=True)  # events are not retained
    probe.publish(node.topic("availability"), "online", retain=True)


def _known(entry: str, layout: str) -> bool:
    """A warning that both layouts retained at once cause in Home Assistant.

    HA lets one topic own an entity: the per-entity layout's, here, as after an HA
    restart (HA subscribes to per-entity topics first) or after a switch to the device
    layout without ``ha remove``. The device message for the same entities is then
    "conflicting" when it is discovered. ``ha remove`` empties the per-entity topics
    first; the empty device message that must follow finds nothing left to remove,
    which HA notes once. The docs say to run ``ha remove`` before switching layouts.
    """
    return layout == "both" and (
        "conflicting MQTT discovery message" in entry or "No device components to cleanup" in entry
    )


@pytest.mark.parametrize("layout", ["device", "component", "both"])
def test_ha_remove_takes_the_device_out_of_home_assistant_without_a_logged_error(
    hass: HomeAssistant, broker: Broker, probe: Probe, tmp_path: Path, layout: str
) -> None:
    config, node = _config(tmp_path, broker)
    begin = len(hass.log_lines())  # the module's Home Assistant logged other tests too
    _leave_behind(probe, node, layout)
    expected = {f"{node.node_id}_{c.object_id}" for c in components(node)}

    def discovered(snap: Snapshot) -> bool:
        entities, devices = _ours(snap, node)
        return {e["unique_id"] for e in entities} == expected and len(devices) == 1

    snap = hass.wait_until(discovered, timeout_s=120, what="discovered")
    if layout == "both":  # the mode switched to "device" without `ha remove`
        probe.publish(node.device_config_topic, device_discovery(node)[0].to_payload(), retain=True)
        hass.wait_for_log(
            lambda e: "conflicting MQTT discovery message" in e and node.node_id in e,
            count=len(expected),
            since=begin,
        )
    entities, _ = _ours(snap, node)
    by_uid = {e["unique_id"]: e["entity_id"] for e in entities}
    # The retained states reached the entities through HA's templates.
    hass.wait_until(
        lambda s: (
            s["states"].get(by_uid[f"{node.node_id}_summary_kitchen"]) == "Kitchen: kettle on"
        ),
        timeout_s=30,
        what="showing the summary",
    )
    before = hass.log_lines()
    at_discovery = [p for p in problems(before[begin:]) if any(n in p for n in OURS)]
    assert [p for p in at_discovery if not _known(p, layout)] == [], "\n".join(at_discovery)

    result = run_ha_cli("remove", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert f"removed node '{node.node_id}'" in result.stdout

    snap = hass.wait_until(
        lambda s: _ours(s, node) == ([], []), timeout_s=60, what="without the device"
    )
    assert not set(by_uid.values()) & set(snap["states"])
    assert not [d for d in snap["discovered"] if node.node_id in d]
    # Let Home Assistant process anything still in flight before reading its log.
    time.sleep(3)
    during = hass.log_lines()[len(before) :]
    logged = problems(during)
    assert [p for p in logged if not _known(p, layout)] == [], "\n".join(logged)
    assert len(logged) <= (1 if layout == "both" else 0), "\n".join(logged)
    removed = [e for e in during if "Removing component" in e]
    assert len(removed) == len(expected), during

    left = retained(broker, node)
    assert left == {}, f"still retained: {sorted(left)}"


def test_the_harness_sees_the_errors_of_a_removal_in_topic_order(
    hass: HomeAssistant, broker: Broker, probe: Probe, tmp_path: Path
) -> None:
    """The check above is not vacuous: emptying everything at once, in topic sort order
    (the removal issue #16 found), makes this Home Assistant log the errors it reported."""
    _, node = _config(tmp_path, broker)
    _leave_behind(probe, node, "device")
    n = len(components(node))
    hass.wait_until(lambda s: len(_ours(s, node)[0]) == n, timeout_s=120, what="discovered")
    before = len(hass.log_lines())
    topics = sorted([*retained(broker, node), *(m.topic for m in component_discovery(node))])
    for topic in topics:
        probe.publish(topic, b"", retain=True)
    hass.wait_until(lambda s: _ours(s, node) == ([], []), timeout_s=60, what="without the device")
    time.sleep(3)
    logged = "\n".join(problems(hass.log_lines()[before:]))
    assert "Template variable error: 'value_json' is undefined" in logged, logged
    assert "Erroneous JSON" in logged, logged
    assert "conflicting MQTT discovery message for entity button." in logged, logged


def test_what_edge_agent_run_left_behind_is_removed_without_a_logged_error(
    hass: HomeAssistant, broker: Broker, probe: Probe, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """The real service publishes its own discovery and retained states (tiny model),
    Home Assistant shows them, the service stops, and ``ha remove`` takes it all away."""
    areas = (
        '[[sensors.subscriptions]]\ntopic = "zigbee2mqtt/kitchen/#"\narea = "Kitchen"\n'
        '[[sensors.subscriptions]]\ntopic = "zigbee2mqtt/living/#"\narea = "Living Room"\n'
    )
    config, node_id = write_config(
        tmp_path, broker, tiny_model.int4_dir, extra=areas, interval_s=1.0, max_new_tokens=8
    )
    s = load_settings(config)
    node = build_node(s)
    assert node.node_id == node_id
    expected = {f"{node_id}_{c.object_id}" for c in components(node)}
    probe.subscribe(node.topic("#"))
    begin = len(hass.log_lines())  # the module's Home Assistant logged other tests too
    agent = start_agent(config)
    try:
        probe.wait_for(node.topic("availability"), lambda p: p == b"online", timeout=120)
        probe.publish("zigbee2mqtt/kitchen/kettle", json.dumps({"power": 2000, "co2": 650}))
        probe.publish("zigbee2mqtt/living/sensor", json.dumps({"temperature": 21.5}))
        probe.wait_for(node.topic("summary"), timeout=120)

        def shown(snap: Snapshot) -> bool:
            entities, devices = _ours(snap, node)
            if {e["unique_id"] for e in entities} != expected or len(devices) != 1:
                return False
            summary = next(e for e in entities if e["unique_id"] == f"{node_id}_summary")
            return snap["states"].get(summary["entity_id"]) not in (None, "unknown")

        hass.wait_until(shown, timeout_s=120, what="showing the agent's summary")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    assert agent.returncode == 0, config.with_suffix(".log").read_text()[-3000:]
    before = retained(broker, node)
    assert node.device_config_topic in before
    assert node.topic("status") in before

    lines = hass.log_lines()
    start = len(lines)
    at_discovery = [p for p in problems(lines[begin:]) if any(n in p for n in OURS)]
    assert at_discovery == [], "\n".join(at_discovery)
    result = run_ha_cli("remove", "-c", str(config))
    assert result.returncode == 0, result.stderr
    hass.wait_until(lambda s: _ours(s, node) == ([], []), timeout_s=60, what="without the agent")
    time.sleep(3)  # let Home Assistant process anything still in flight
    during = hass.log_lines()[start:]
    assert problems(during) == [], "\n".join(problems(during))
    assert len([e for e in during if "Removing component" in e]) == len(expected), during
    left = retained(broker, node)
    assert left == {}, f"still retained: {sorted(left)}"
