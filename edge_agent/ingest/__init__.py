"""Payload adapters: pure functions from (topic, bytes) to typed sensor events.

Each adapter raises :class:`~edge_agent.errors.PayloadError` with a reason code for
input it cannot use, and returns an empty list for topics it deliberately ignores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.ingest import zigbee2mqtt

Adapter = Callable[[str, Any, str, str | None, float], list[SensorEvent]]
"""(topic, decoded JSON or text, topic prefix, default area, receive time) -> events."""

ADAPTERS: dict[str, Adapter] = {"zigbee2mqtt": zigbee2mqtt.parse}


def topic_prefix(topic_filter: str) -> str:
    """The literal part of a filter before its first wildcard, e.g. ``zigbee2mqtt/``."""
    parts = topic_filter.split("/")
    literal = []
    for part in parts:
        if part in ("+", "#"):
            break
        literal.append(part)
    return "/".join(literal) + "/" if literal else ""


def decode_json(payload: bytes, max_bytes: int) -> Any:
    """Size-check, UTF-8-decode and JSON-parse a payload, with a reason code on failure."""
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"{len(payload)} bytes exceeds the {max_bytes}-byte cap")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("invalid_utf8", str(exc)) from exc
    try:
        # NaN/Infinity are not JSON; reject them here rather than let them into a window.
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError("not_json", f"{exc.msg} at char {exc.pos}") from exc


def _reject_constant(name: str) -> Any:
    raise PayloadError("not_finite", f"{name} is not a finite number")
