"""``edge-agent ha ...``: show or remove the Home Assistant MQTT discovery."""

from __future__ import annotations

import argparse
import json
import sys

from edge_agent.cli.options import add_config_option
from edge_agent.connection import client_options
from edge_agent.errors import ConfigError, TransportError
from edge_agent.ha.discovery import (
    discovery_messages,
    discovery_topics,
    retained_state_topics,
)
from edge_agent.ha.remove import RemovalPlan, remove_node
from edge_agent.ha.wiring import build_node
from edge_agent.settings import Settings, load_settings

PRINT_EPILOG = """\
examples:
  edge-agent ha print-discovery -c /etc/edge-agent/config.toml
  edge-agent ha print-discovery --mode component    # the per-entity layout for HA < 2024.11
  EDGE_AGENT_HOMEASSISTANT__DISCOVERY_PREFIX=ha edge-agent ha print-discovery

Prints each retained discovery message as its topic, then its JSON. No broker needed.
"""

REMOVE_EPILOG = """\
examples:
  systemctl stop edge-agent && edge-agent ha remove -c /etc/edge-agent/config.toml

What it does, in this order (TLS and the login come from the config, as for `run`):
  1. collects (--sweep-s) the retained messages on our discovery topics (both layouts)
     and under our base topic;
  2. empties the device discovery topic, if it holds one: Home Assistant deletes the
     device and its entities; then waits --settle-s;
  3. empties every retained per-entity discovery topic (the older layout); waits again;
  4. empties our retained state topics (summary, area summaries, alerts, status,
     availability, pending action) and any other retained message found under them.
Discovery topics holding nothing are left alone, and no state is emptied while an
entity still reads it, so Home Assistant logs no template or discovery error. (If both
layouts are retained, the per-entity topics go first: Home Assistant gave them the
entities.)

Stop the service first (or set homeassistant.enabled = false): a running agent publishes
its discovery again at start and whenever Home Assistant restarts.

exit status: 0 removed, 1 config or broker error
"""


def add_ha_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``ha`` command group."""
    ha = sub.add_parser("ha", help="Home Assistant MQTT discovery: print or remove it")
    ha_sub = ha.add_subparsers(title="ha commands", metavar="COMMAND", required=True)

    show = ha_sub.add_parser(
        "print-discovery",
        help="print the discovery messages for the effective config",
        epilog=PRINT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(show)
    show.add_argument(
        "--mode",
        choices=("device", "component"),
        default=None,
        help="layout to print (default: homeassistant.discovery_mode)",
    )
    show.set_defaults(handler=_print_discovery)

    remove = ha_sub.add_parser(
        "remove",
        help="delete the device from Home Assistant: clear discovery and retained states",
        epilog=REMOVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(remove)
    remove.add_argument(
        "--sweep-s",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long to collect the retained messages on our topics; only discovery "
        "topics found holding one are emptied (default: 1)",
    )
    remove.add_argument(
        "--settle-s",
        type=float,
        default=1.5,
        metavar="SECONDS",
        help="wait after each discovery phase (device, then per-entity) before the next, "
        "so Home Assistant has deleted the entities first (default: 1.5)",
    )
    remove.set_defaults(handler=_remove)


def _settings(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _print_discovery(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 1
    s = settings
    node = build_node(s)
    for message in discovery_messages(node, args.mode or s.homeassistant.discovery_mode):
        print(message.topic)
        print(json.dumps(message.config, indent=2, ensure_ascii=False))
        print()
    return 0


def _remove(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 1
    s = settings
    node = build_node(s)
    prefix = node.discovery_prefix
    plan = RemovalPlan(
        device_discovery=node.device_config_topic,
        entity_discovery=tuple(t for t in discovery_topics(node) if t != node.device_config_topic),
        states=retained_state_topics(node),
        sweep=(
            node.device_config_topic,
            f"{prefix}/+/{node.node_id}/+/config",
            f"{node.root}/#",
        ),
        discovery_prefix=prefix,
    )
    try:
        opt = client_options(s.mqtt, client_id_suffix="ha-remove")
        result = remove_node(opt, plan, sweep_s=args.sweep_s, settle_s=args.settle_s)
    except ConfigError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1
    except TransportError as exc:
        print(f"edge-agent: {exc}; check mqtt.host, mqtt.port and the login", file=sys.stderr)
        return 1
    if result.found.get(node.topics.availability) == b"online":
        print(
            "warning: availability was 'online': if edge-agent is still running it will "
            "publish its discovery again; stop it or set homeassistant.enabled = false",
            file=sys.stderr,
        )
    for topic in result.cleared:
        print(f"cleared {topic}")
    print(f"removed node {node.node_id!r}: {len(result.cleared)} retained topics cleared")
    return 0
