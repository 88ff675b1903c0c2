"""Home Assistant MQTT discovery payloads, built from plain values (no I/O).

Two layouts of the same entities, chosen by ``homeassistant.discovery_mode``:

* ``device`` (Home Assistant 2024.11+): one retained message on
  ``<prefix>/device/<node_id>/config`` holding the device, origin, shared availability
  and every entity under ``components``;
* ``component`` (older releases): one retained message per entity on
  ``<prefix>/<platform>/<node_id>/<object_id>/config``.

Full key names are used everywhere (Home Assistant expands abbreviations into these),
so a payload can be read next to Home Assistant's documentation. ``unique_id`` is
``<node_id>_<object_id>``: stable across restarts and identical in both layouts, so
switching layout keeps entity history.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from edge_agent.domain import OFFLINE, ONLINE, AnomalyKind, ExcursionPhase, Topics
from edge_agent.semantics import humanize

DiscoveryMode = Literal["device", "component"]

ORIGIN_NAME = "edge-agent"
"""``origin.name``: the software that publishes the discovery messages."""

ANOMALY_EVENT_TYPES: tuple[str, ...] = (
    *get_args(ExcursionPhase),
    *(kind for kind in get_args(AnomalyKind) if kind != "threshold"),
)
"""``event_type`` values published on ``<base>/<node_id>/anomaly``: a threshold excursion's
``started``/``reminder``/``resolved``, and the one-off kinds (``zscore``, ``jump``, ``stale``)."""

ACTION_EVENT_TYPES = ("proposed", "performed", "rejected", "expired", "failed", "approval_refused")
"""``event_type`` values published on ``<base>/<node_id>/action/event``."""

PAYLOAD_PRESS = "PRESS"
"""What the approve and reject buttons publish."""

STATUS_KEYS = ("model", "decode_tok_s", "queue_depth", "outbox_size", "uptime_s", "last_error")
"""Keys of the retained status JSON on ``<base>/<node_id>/status`` that entities show."""

ENTITY_QOS = 1
"""QoS of HA's subscriptions and button/text commands: a tap must not be lost."""

STATE_MAX_CHARS = 255
"""Home Assistant rejects a sensor state longer than this; templates slice to it."""


@dataclass(frozen=True, slots=True)
class HaNode:
    """Everything the payloads depend on, as plain values taken from settings."""

    node_id: str
    base_topic: str
    discovery_prefix: str
    version: str
    model_id: str
    areas: tuple[str, ...] = ()
    name: str | None = None
    """Device name shown in Home Assistant; default ``edge-agent <node_id>``."""
    support_url: str | None = None
    area_names: Mapping[str, str] = field(default_factory=dict)
    """Display name per area (``summary.area_names``); default: the area humanized."""

    def area_name(self, area: str) -> str:
        """The display name of ``area`` ("living_room" -> "Living room")."""
        return self.area_names.get(area) or humanize(area)

    @property
    def root(self) -> str:
        """``<base_topic>/<node_id>``: every topic of ours is below it."""
        return f"{self.base_topic}/{self.node_id}"

    @property
    def topics(self) -> Topics:
        """Our own topics, spelled as the agent publishes them."""
        return Topics.under(self.root)

    def topic(self, leaf: str) -> str:
        """``<base_topic>/<node_id>/<leaf>``: for wildcards and tests; entities use
        :attr:`topics`."""
        return f"{self.root}/{leaf}"

    @property
    def status_topic(self) -> str:
        """Home Assistant's birth/last-will topic ``<prefix>/status``."""
        return f"{self.discovery_prefix}/status"

    @property
    def device_config_topic(self) -> str:
        """The device-based discovery topic."""
        return f"{self.discovery_prefix}/device/{self.node_id}/config"

    def component_config_topic(self, platform: str, object_id: str) -> str:
        """A per-component discovery topic."""
        return f"{self.discovery_prefix}/{platform}/{self.node_id}/{object_id}/config"


@dataclass(frozen=True, slots=True)
class Component:
    """One Home Assistant entity: its platform, object id and entity options."""

    platform: str
    object_id: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One retained discovery publish; it owns its codec."""

    topic: str
    config: Mapping[str, Any]

    def to_payload(self) -> bytes:
        """Compact UTF-8 JSON, keys in builder order (stable for golden files)."""
        return json.dumps(self.config, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, topic: str, payload: bytes) -> DiscoveryMessage:
        """Decode a published message (used by tests and ``ha print-discovery``)."""
        config = json.loads(payload)
        if not isinstance(config, dict):
            raise ValueError(f"discovery payload on {topic} is not a JSON object")
        return cls(topic, config)


def area_slug(area: str) -> str:
    """An object-id-safe slug of an area name; non-ASCII names get a short hash."""
    slug = re.sub(r"[^a-z0-9]+", "_", area.lower()).strip("_")
    return slug or "x" + hashlib.sha1(area.encode()).hexdigest()[:8]


def _alert_sensor(object_id: str, name: str, topic: str) -> Component:
    """A binary sensor that is on while any threshold excursion is open (``alerts.py``)."""
    return Component(
        "binary_sensor",
        object_id,
        {
            "name": name,
            "icon": "mdi:alert-outline",
            "device_class": "problem",
            "state_topic": topic,
            "value_template": "{{ 'ON' if value_json.active else 'OFF' }}",
            "json_attributes_topic": topic,
        },
    )


def unique_areas(areas: Sequence[str]) -> tuple[str, ...]:
    """Areas in order, dropping empty names and ones whose slug is already taken."""
    seen: set[str] = set()
    kept: list[str] = []
    for area in areas:
        slug = area_slug(area) if area.strip() else ""
        if slug and slug not in seen:
            seen.add(slug)
            kept.append(area)
    return tuple(kept)


_ANSWER_TEMPLATE = (
    "{% set a = value_json.answer %}"
    f"{{{{ a if a | length <= {STATE_MAX_CHARS} else a[:{STATE_MAX_CHARS - 1}] ~ '…' }}}}"
)


def _summary_sensor(object_id: str, name: str, topic: str) -> Component:
    """A summary sensor: the title as state, the whole summary JSON as attributes."""
    return Component(
        "sensor",
        object_id,
        {
            "name": name,
            "icon": "mdi:text-box-outline",
            "state_topic": topic,
            "value_template": f"{{{{ value_json.title[:{STATE_MAX_CHARS}] }}}}",
            "json_attributes_topic": topic,
        },
    )


def _status_sensor(status_topic: str, key: str, name: str, icon: str, **extra: Any) -> Component:
    """A diagnostic sensor showing ``key`` of the status JSON (object id = the key)."""
    options: dict[str, Any] = {
        "name": name,
        "icon": icon,
        "entity_category": "diagnostic",
        "state_topic": status_topic,
        # A missing key renders "None", which Home Assistant shows as "unknown".
        "value_template": f"{{{{ value_json.{key} | default(none) }}}}",
    }
    options.update(extra)
    return Component("sensor", key, options)


def components(node: HaNode) -> tuple[Component, ...]:
    """Every entity of the device, in a stable order."""
    topics = node.topics
    found: list[Component] = [_summary_sensor("summary", "Summary", topics.summary)]
    for area in unique_areas(node.areas):
        found.append(
            _summary_sensor(
                f"summary_{area_slug(area)}",
                f"{node.area_name(area)} summary",
                topics.area_summary(area),
            )
        )
    found += [
        Component(
            "event",
            "anomaly",
            {
                "name": "Anomaly",
                "icon": "mdi:alert-decagram-outline",
                "state_topic": topics.anomaly,
                "event_types": list(ANOMALY_EVENT_TYPES),
            },
        ),
        _alert_sensor("alert", "Alert active", topics.area_alert(None)),
        *(
            _alert_sensor(
                f"alert_{area_slug(area)}",
                f"{area} alert active",
                topics.area_alert(area),
            )
            for area in unique_areas(node.areas)
        ),
        Component(
            "event",
            "action",
            {
                "name": "Action",
                "icon": "mdi:robot-outline",
                "state_topic": topics.action_event,
                "event_types": list(ACTION_EVENT_TYPES),
            },
        ),
        Component(
            "text",
            "ask",
            {
                "name": "Ask",
                "icon": "mdi:chat-question-outline",
                "command_topic": topics.ask,
                "min": 1,
                "max": STATE_MAX_CHARS,
                "mode": "text",
            },
        ),
        Component(
            "sensor",
            "answer",
            {
                "name": "Answer",
                "icon": "mdi:chat-processing-outline",
                "state_topic": topics.answer,
                # The state holds at most 255 characters: a longer answer is cut with
                # "…" there, and the attributes keep all of it.
                "value_template": _ANSWER_TEMPLATE,
                "json_attributes_topic": topics.answer,
            },
        ),
        Component(
            "sensor",
            "pending_action",
            {
                "name": "Pending action",
                "icon": "mdi:account-question-outline",
                "state_topic": topics.action_pending,
                # 'none', the one proposal (action(device, params): reason), or a count.
                "value_template": f"{{{{ value_json.state[:{STATE_MAX_CHARS}] }}}}",
                "json_attributes_topic": topics.action_pending,
            },
        ),
        Component(
            "button",
            "approve",
            {
                "name": "Approve action",
                "icon": "mdi:check-circle-outline",
                "command_topic": topics.action_approve,
                "payload_press": PAYLOAD_PRESS,
            },
        ),
        Component(
            "button",
            "reject",
            {
                "name": "Reject action",
                "icon": "mdi:close-circle-outline",
                "command_topic": topics.action_reject,
                "payload_press": PAYLOAD_PRESS,
            },
        ),
    ]
    status = topics.status
    found += [
        _status_sensor(status, "model", "Model", "mdi:brain"),
        _status_sensor(
            status,
            "decode_tok_s",
            "Decode speed",
            "mdi:speedometer",
            unit_of_measurement="tok/s",
            state_class="measurement",
        ),
        _status_sensor(
            status, "queue_depth", "Queue depth", "mdi:tray-full", state_class="measurement"
        ),
        _status_sensor(
            status,
            "outbox_size",
            "Outbox size",
            "mdi:email-arrow-right-outline",
            state_class="measurement",
        ),
        _status_sensor(
            status,
            "uptime_s",
            "Uptime",
            "mdi:timer-outline",
            device_class="duration",
            unit_of_measurement="s",
        ),
        # null -> 'none' (a real state rather than "unknown"); long errors are cut.
        _status_sensor(
            status,
            "last_error",
            "Last error",
            "mdi:alert-circle-outline",
            value_template=f"{{{{ (value_json.last_error or 'none')[:{STATE_MAX_CHARS}] }}}}",
        ),
    ]
    return tuple(found)


def device_block(node: HaNode) -> dict[str, Any]:
    """The ``device`` block shared by every entity."""
    return {
        "identifiers": [f"edge_agent_{node.node_id}"],
        "name": node.name or f"edge-agent {node.node_id}",
        "manufacturer": "edge-agent",
        "model": node.model_id,
        "sw_version": node.version,
    }


def origin_block(node: HaNode) -> dict[str, Any]:
    """The ``origin`` block: who publishes these messages (shown in HA's MQTT info)."""
    origin: dict[str, Any] = {"name": ORIGIN_NAME, "sw_version": node.version}
    if node.support_url:
        origin["support_url"] = node.support_url
    return origin


def availability_block(node: HaNode) -> dict[str, Any]:
    """Availability shared by every entity: our retained ``online``/``offline`` topic."""
    return {
        "availability_topic": node.topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }


def _unique_id(node: HaNode, component: Component) -> str:
    return f"{node.node_id}_{component.object_id}"


def device_discovery(node: HaNode) -> list[DiscoveryMessage]:
    """The single device-based discovery message."""
    cmps: dict[str, Any] = {
        c.object_id: {
            "platform": c.platform,
            "unique_id": _unique_id(node, c),
            **c.options,
            # Per entity: 'qos' is not among the options HA shares from the device level.
            "qos": ENTITY_QOS,
        }
        for c in components(node)
    }
    config = {
        "device": device_block(node),
        "origin": origin_block(node),
        **availability_block(node),
        "components": cmps,
    }
    return [DiscoveryMessage(node.device_config_topic, config)]


def component_discovery(node: HaNode) -> list[DiscoveryMessage]:
    """One discovery message per entity, for Home Assistant before 2024.11."""
    return [
        DiscoveryMessage(
            node.component_config_topic(c.platform, c.object_id),
            {
                "unique_id": _unique_id(node, c),
                **c.options,
                **availability_block(node),
                "qos": ENTITY_QOS,
                "device": device_block(node),
                "origin": origin_block(node),
            },
        )
        for c in components(node)
    ]


def discovery_messages(node: HaNode, mode: DiscoveryMode) -> list[DiscoveryMessage]:
    """The discovery messages of the configured layout."""
    return device_discovery(node) if mode == "device" else component_discovery(node)


def discovery_topics(node: HaNode) -> tuple[str, ...]:
    """Every discovery topic of both layouts: what ``ha remove`` clears."""
    return (node.device_config_topic, *(m.topic for m in component_discovery(node)))


def retained_state_topics(node: HaNode) -> tuple[str, ...]:
    """Our retained state topics that keep a device 'alive' in Home Assistant."""
    topics = node.topics
    areas = tuple(topics.area_summary(a) for a in unique_areas(node.areas))
    alerts = tuple(topics.area_alert(a) for a in (None, *unique_areas(node.areas)))
    return (topics.summary, *areas, *alerts, topics.status, topics.availability)
