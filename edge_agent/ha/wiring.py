"""Plain discovery inputs taken from settings sections, for the app and the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edge_agent import __version__
from edge_agent.errors import ModelError
from edge_agent.ha.discovery import HaNode
from edge_agent.llm.manifest import Manifest
from edge_agent.settings import Settings, Subscription


def configured_areas(subscriptions: Iterable[Subscription]) -> tuple[str, ...]:
    """Every area named in the subscriptions (``area`` and ``device_areas``), in order."""
    areas: dict[str, None] = {}
    for sub in subscriptions:
        if sub.area:
            areas[sub.area] = None
        for area in sub.device_areas.values():
            areas[area] = None
    return tuple(areas)


def model_label(folder: Path) -> str | None:
    """A short model name from the folder's manifest ("Gemma 3 270M int8/int4"), or None
    when the folder has no readable manifest. The CLI and the service both use it, so
    Home Assistant shows the same device model before and after the model loads."""
    try:
        return Manifest.from_dir(folder).label
    except (ModelError, OSError, ValueError):
        return None


def build_node(settings: Settings, model_id: str | None = None) -> HaNode:
    """The discovery inputs of ``settings``, the same for ``run`` and the CLI; the device
    model is the folder's short :func:`model_label`, else ``model_id``, else the folder's
    name."""
    model = settings.model
    return HaNode(
        node_id=settings.mqtt.node_id,
        base_topic=settings.mqtt.base_topic,
        discovery_prefix=settings.homeassistant.discovery_prefix,
        version=__version__,
        model_id=model_label(model.path) or model_id or model.path.name,
        areas=configured_areas(settings.sensors.subscriptions),
        area_names=dict(settings.summary.area_names),
    )
