"""Discovery payloads: golden files, stable ids, topics Home Assistant accepts.

Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 pytest tests/test_ha_discovery.py`` and review the diff.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import ha as ha_cli
from edge_agent.ha.discovery import (
    ACTION_EVENT_TYPES,
    ANOMALY_EVENT_TYPES,
    DiscoveryMessage,
    HaNode,
    area_slug,
    component_discovery,
    components,
    device_discovery,
    discovery_messages,
    discovery_topics,
    retained_state_topics,
    unique_areas,
)
from edge_agent.ha.wiring import configured_areas
from edge_agent.settings import Subscription

GOLDEN = Path(__file__).parent / "golden" / "ha"

# Home Assistant's own discovery topic pattern (components/mqtt/discovery.py).
HA_TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)

NODE = HaNode(
    node_id="kitchen-pi",
    base_topic="edge-agent",
    discovery_prefix="homeassistant",
    version="0.1.0",
    model_id="gemma-2-2b-it-int4",
    areas=("Kitchen", "Living Room"),
    support_url="https://example.org/edge-agent",
)


def as_json(messages: list[DiscoveryMessage]) -> list[dict[str, Any]]:
    """What the golden files hold: topic and decoded payload per message."""
    return [{"topic": m.topic, "payload": json.loads(m.to_payload())} for m in messages]


@pytest.mark.parametrize(
    ("name", "messages"),
    [("device", device_discovery(NODE)), ("component", component_discovery(NODE))],
)
def test_payloads_match_golden_files(name: str, messages: list[DiscoveryMessage]) -> None:
    path = GOLDEN / f"{name}.json"
    actual = as_json(messages)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n")
    assert actual == json.loads(path.read_text()), f"run UPDATE_GOLDEN=1 to regenerate {path}"


def test_device_message_holds_every_entity_with_shared_availability() -> None:
    (message,) = device_discovery(NODE)
    config = dict(message.config)
    assert message.topic == "homeassistant/device/kitchen-pi/config"
    assert config["device"]["identifiers"] == ["edge_agent_kitchen-pi"]
    assert config["origin"] == {
        "name": "edge-agent",
        "sw_version": "0.1.0",
        "support_url": "https://example.org/edge-agent",
    }
    assert config["availability_topic"] == "edge-agent/kitchen-pi/availability"
    cmps = config["components"]
    assert {k: v["platform"] for k, v in cmps.items()} == {
        "summary": "sensor",
        "summary_kitchen": "sensor",
        "summary_living_room": "sensor",
        "anomaly": "event",
        "alert": "binary_sensor",
        "alert_kitchen": "binary_sensor",
        "alert_living_room": "binary_sensor",
        "action": "event",
        "ask": "text",
        "answer": "sensor",
        "pending_action": "sensor",
        "approve": "button",
        "reject": "button",
        "model": "sensor",
        "decode_tok_s": "sensor",
        "queue_depth": "sensor",
        "outbox_size": "sensor",
        "uptime_s": "sensor",
        "last_error": "sensor",
    }
    assert cmps["summary_living_room"]["state_topic"] == "edge-agent/kitchen-pi/summary/Living Room"
    assert cmps["anomaly"]["event_types"] == list(ANOMALY_EVENT_TYPES)
    assert ANOMALY_EVENT_TYPES == ("started", "reminder", "resolved", "zscore", "jump", "stale")
    assert cmps["alert_living_room"]["state_topic"] == "edge-agent/kitchen-pi/alert/Living Room"
    assert cmps["alert"]["state_topic"] == "edge-agent/kitchen-pi/alert"
    assert cmps["alert"]["device_class"] == "problem"
    assert cmps["action"]["event_types"] == list(ACTION_EVENT_TYPES)
    assert cmps["ask"]["command_topic"] == "edge-agent/kitchen-pi/ask"
    assert cmps["answer"]["state_topic"] == "edge-agent/kitchen-pi/answer"
    assert cmps["approve"]["command_topic"] == "edge-agent/kitchen-pi/action/approve"
    assert cmps["approve"]["payload_press"] == "PRESS"
    assert cmps["pending_action"]["state_topic"] == "edge-agent/kitchen-pi/action/pending"
    assert cmps["reject"]["command_topic"] == "edge-agent/kitchen-pi/action/reject"
    diagnostic = {k for k, v in cmps.items() if v.get("entity_category") == "diagnostic"}
    assert diagnostic == {
        "model",
        "decode_tok_s",
        "queue_depth",
        "outbox_size",
        "uptime_s",
        "last_error",
    }
    assert all(cmps[k]["state_topic"] == "edge-agent/kitchen-pi/status" for k in diagnostic)


def test_unique_ids_are_stable_distinct_and_the_same_in_both_layouts() -> None:
    (device,) = device_discovery(NODE)
    from_device = {c["unique_id"] for c in device.config["components"].values()}
    from_components = {m.config["unique_id"] for m in component_discovery(NODE)}
    assert from_device == from_components
    assert len(from_components) == len(component_discovery(NODE))
    assert all(uid.startswith("kitchen-pi_") for uid in from_device)
    rebuilt = device_discovery(HaNode(**{f: getattr(NODE, f) for f in NODE.__slots__}))
    assert rebuilt[0].to_payload() == device.to_payload()


def test_every_topic_is_one_home_assistant_accepts() -> None:
    prefix = NODE.discovery_prefix + "/"
    for topic in discovery_topics(NODE):
        assert topic.startswith(prefix)
        match = HA_TOPIC_MATCHER.fullmatch(topic.removeprefix(prefix))
        assert match is not None, topic
        # HA reads "device/<id>/config" as object id <id>; components carry a node id.
        assert "kitchen-pi" in (match["node_id"], match["object_id"])


def test_component_layout_repeats_device_origin_and_availability() -> None:
    for message in component_discovery(NODE):
        assert message.config["device"]["identifiers"] == ["edge_agent_kitchen-pi"]
        assert message.config["origin"]["name"] == "edge-agent"
        assert message.config["payload_not_available"] == "offline"
        assert "platform" not in message.config
    assert discovery_messages(NODE, "component") == component_discovery(NODE)
    assert discovery_messages(NODE, "device") == device_discovery(NODE)


def test_removal_covers_both_layouts_and_retained_states() -> None:
    topics = discovery_topics(NODE)
    assert topics[0] == NODE.device_config_topic
    assert {m.topic for m in component_discovery(NODE)} <= set(topics)
    assert retained_state_topics(NODE) == (
        "edge-agent/kitchen-pi/summary",
        "edge-agent/kitchen-pi/summary/Kitchen",
        "edge-agent/kitchen-pi/summary/Living Room",
        "edge-agent/kitchen-pi/alert",
        "edge-agent/kitchen-pi/alert/Kitchen",
        "edge-agent/kitchen-pi/alert/Living Room",
        "edge-agent/kitchen-pi/status",
        "edge-agent/kitchen-pi/availability",
    )


def test_area_names_become_safe_distinct_object_ids() -> None:
    assert area_slug("Living Room") == "living_room"
    assert area_slug("  Küche/2 ") == "k_che_2"
    assert re.fullmatch(r"x[0-9a-f]{8}", area_slug("厨房"))
    # 'living room' would collide with 'Living Room'; empty names are dropped.
    assert unique_areas(["Living Room", "living room", " ", "Attic"]) == ("Living Room", "Attic")


def test_areas_come_from_subscriptions_in_order() -> None:
    subs = [
        Subscription(topic="zigbee2mqtt/#", area="Kitchen"),
        Subscription(topic="tele/#", device_areas={"plug": "Garage", "lamp": "Kitchen"}),
    ]
    assert configured_areas(subs) == ("Kitchen", "Garage")


def test_no_support_url_means_no_key() -> None:
    node = HaNode("n", "b", "homeassistant", "1", "m")
    (message,) = device_discovery(node)
    assert message.config["origin"] == {"name": "edge-agent", "sw_version": "1"}
    assert message.config["device"]["name"] == "edge-agent n"


def test_payload_round_trips() -> None:
    (message,) = device_discovery(NODE)
    assert DiscoveryMessage.from_payload(message.topic, message.to_payload()) == message
    with pytest.raises(ValueError, match="not a JSON object"):
        DiscoveryMessage.from_payload("t", b"[1]")


def test_print_discovery_prints_topic_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[mqtt]\nnode_id = "pi"\n[homeassistant]\ndiscovery_prefix = "ha"\n'
        '[[sensors.subscriptions]]\ntopic = "z/#"\narea = "Hall"\n'
    )
    parser = _parser()
    for mode, expected in (("device", 1), ("component", 17)):
        args = parser.parse_args(["ha", "print-discovery", "-c", str(config), "--mode", mode])
        assert args.handler(args) == 0
        blocks = capsys.readouterr().out.strip().split("\n\n")
        assert len(blocks) == expected
        topic, _, body = blocks[0].partition("\n")
        assert topic.startswith("ha/")
        assert json.loads(body)["device"]["identifiers"] == ["edge_agent_pi"]


def test_print_discovery_reports_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[homeassistant]\ndiscovery_mode = "both"\n')
    args = _parser().parse_args(["ha", "print-discovery", "-c", str(config)])
    assert args.handler(args) == 1
    assert "homeassistant.discovery_mode" in capsys.readouterr().err


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent")
    ha_cli.add_ha_commands(parser.add_subparsers())
    return parser


def test_area_entities_use_display_names() -> None:
    node = HaNode(
        "n", "b", "homeassistant", "1", "m", ("living_room", "hall"), area_names={"hall": "Entry"}
    )
    names = {c.object_id: c.options["name"] for c in components(node)}
    assert names["summary_living_room"] == "Living room summary"
    assert names["summary_hall"] == "Entry summary"


def test_the_device_model_is_short_and_the_same_before_and_after_loading(
    tiny_model: Any,
) -> None:
    from edge_agent.ha.wiring import build_node, model_label
    from edge_agent.settings import Settings

    s = Settings(model={"path": str(tiny_model.int4_dir)})
    assert model_label(tiny_model.int4_dir) == "Gemma 2 int4"
    # `ha print-discovery` (no model loaded) and the service (with the loaded id) agree.
    cli = build_node(s)
    run = build_node(s, model_id="gemma2:x@1234")
    assert cli.model_id == run.model_id == "Gemma 2 int4"
