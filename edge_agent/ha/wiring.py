"""Plain discovery inputs taken from settings sections, for the app and the CLI."""

from __future__ import annotations

from collections.abc import Iterable

from edge_agent import __version__
from edge_agent.ha.discovery import HaNode
from edge_agent.settings import HomeAssistantSettings, ModelSettings, MqttSettings, Subscription


def configured_areas(subscriptions: Iterable[Subscription]) -> tuple[str, ...]:
    """Every area named in the subscriptions (``area`` and ``device_areas``), in order."""
    areas: dict[str, None] = {}
    for sub in subscriptions:
        if sub.area:
            areas[sub.area] = None
        for area in sub.device_areas.values():
            areas[area] = None
    return tuple(areas)


def build_node(
    mqtt: MqttSettings,
    ha: HomeAssistantSettings,
    subscriptions: Iterable[Subscription],
    model: ModelSettings,
    model_id: str | None = None,
) -> HaNode:
    """The discovery inputs; ``model_id`` defaults to the model folder's name.

    The service passes the loaded generator's ``model_id``; the CLI, which loads no
    model, falls back to the folder name.
    """
    return HaNode(
        node_id=mqtt.node_id,
        base_topic=mqtt.base_topic,
        discovery_prefix=ha.discovery_prefix,
        version=__version__,
        model_id=model_id or model.path.name,
        areas=configured_areas(subscriptions),
    )
