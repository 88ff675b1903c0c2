"""Take a node out of Home Assistant with a short-lived client (``edge-agent ha remove``).

An empty retained publish deletes a retained message; on a discovery topic it also tells
Home Assistant to delete the entity (or, on the device topic, the whole device). The
order matters, and it is fixed here, not left to topic sort order:

1. the device discovery topic: Home Assistant removes the device and all its entities;
2. after ``settle_s``, every per-entity discovery topic (the older layout). Emptied while
   the device still owned those entities they would be "conflicting MQTT discovery";
3. after ``settle_s`` again, our retained state topics. Emptied while the entities
   still exist, every template reading them logs "'value_json' is undefined" or
   "Erroneous JSON".

A discovery topic is emptied only when the sweep found a retained message on it. Home
Assistant reads an empty device topic as "remove every entity discovered under this
node id", whichever topic discovered them: for entities of the per-entity layout that is
one "conflicting MQTT discovery message" warning each, and with nothing discovered at
all it is "No device components to cleanup". When both layouts are retained, the
per-entity topics go first (see :func:`remove_node`). A wait is skipped when its phase
cleared nothing retained.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as paho

from edge_agent.errors import TransportError
from edge_agent.transport.client_factory import (
    ClientOptions,
    close,
    connect_and_wait,
    new_client,
)


@dataclass(frozen=True, slots=True)
class RemovalPlan:
    """The topics of one node, by phase, and the filters that find stray retained ones."""

    device_discovery: str
    entity_discovery: tuple[str, ...]
    states: tuple[str, ...]
    sweep: tuple[str, ...] = ()
    """Filters subscribed first: retained messages they deliver are cleared too, in the
    phase their topic belongs to (see :meth:`phase_of`)."""
    discovery_prefix: str = "homeassistant"

    def phase_of(self, topic: str) -> int:
        """0 device discovery, 1 per-entity discovery, 2 state."""
        if topic == self.device_discovery:
            return 0
        if topic.startswith(f"{self.discovery_prefix}/") and topic.endswith("/config"):
            return 1
        return 2


@dataclass(frozen=True, slots=True)
class ClearResult:
    """What :func:`remove_node` did."""

    cleared: tuple[str, ...]
    """Every topic an empty retained message was published on, in publish order."""
    found: dict[str, bytes]
    """Retained messages seen during the sweep, by topic."""


def remove_node(
    opt: ClientOptions, plan: RemovalPlan, *, sweep_s: float = 1.0, settle_s: float = 1.5
) -> ClearResult:
    """Clear ``plan``'s topics phase by phase, waiting ``settle_s`` between phases.

    With a sweep, discovery topics are cleared only where a retained message was found;
    without one (``plan.sweep`` empty), every topic of the plan is cleared.

    Raises :class:`TransportError` when the broker cannot be reached, refuses us or does
    not acknowledge a publish.
    """
    found: dict[str, bytes] = {}
    lock = threading.Lock()  # on_message runs on paho's thread
    subscribed = threading.Event()
    client = new_client(opt, paho.Client)

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            with lock:
                found[msg.topic] = bytes(msg.payload)

    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    connect_and_wait(client, opt)
    try:
        if plan.sweep:
            client.subscribe([(f, 1) for f in plan.sweep])
            if not subscribed.wait(opt.connect_timeout_s):
                raise TransportError("the broker did not acknowledge the subscription")
            time.sleep(sweep_s)  # retained messages follow the SUBACK
            client.unsubscribe(list(plan.sweep))
        with lock:
            swept = dict(found)
        phases = [
            [t for t in (plan.device_discovery,) if not plan.sweep or t in swept],
            sorted(t for t in plan.entity_discovery if not plan.sweep or t in swept),
            list(plan.states),
        ]
        for topic in sorted(swept):
            if all(topic not in phase for phase in phases):
                phases[plan.phase_of(topic)].append(topic)
        if plan.sweep and phases[0] and phases[1]:
            # Both layouts retained: Home Assistant subscribes to per-entity topics
            # before device topics, so after its start (and after a switch to the
            # device layout) those own the entities and the device message was refused
            # as "conflicting". Emptying the device first would remove each entity
            # through the wrong topic, one warning each; this way HA logs one line.
            # (Owned by the device, after a switch the other way and no HA restart,
            # it is one warning each in this order: the owner is not visible here.)
            phases[0], phases[1] = phases[1], phases[0]
        cleared: list[str] = []
        for n, topics in enumerate(phases):
            _publish_empty(client, topics, opt.connect_timeout_s)
            cleared += topics
            # Home Assistant handles discovery asynchronously: give it time to finish
            # removing what this phase took away before the next one.
            if n < len(phases) - 1 and any(t in swept for t in topics):
                time.sleep(settle_s)
        return ClearResult(tuple(cleared), swept)
    finally:
        close(client)


def _publish_empty(client: paho.Client, topics: list[str], timeout_s: float) -> None:
    """Empty retained messages on ``topics``, in order, each acknowledged (QoS 1)."""
    infos = [client.publish(t, b"", qos=1, retain=True) for t in topics]
    deadline = time.monotonic() + timeout_s
    for info in infos:
        info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        if not info.is_published():
            raise TransportError("the broker did not acknowledge every publish in time")
