"""Domain and wire types. Each type that crosses MQTT owns its codec.

This module imports nothing from the package: every other module may import it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
"""Version of every JSON message edge-agent publishes; bumped on breaking changes."""

ONLINE = "online"
OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class SensorEvent:
    """One reading of one metric of one device, normalised from any payload shape."""

    device: str
    metric: str
    value: float
    ts: float
    """Receive time, seconds since the epoch."""
    topic: str
    unit: str | None = None
    area: str | None = None


@dataclass(frozen=True, slots=True)
class MetricFacts:
    """Deterministic facts about one metric of one device over a window."""

    device: str
    metric: str
    count: int
    last: float
    min: float
    max: float
    mean: float
    first_ts: float
    last_ts: float
    unit: str | None = None
    area: str | None = None

    @property
    def fact_id(self) -> str:
        """Stable id used to cite this fact from a summary."""
        return f"{self.device}.{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, rounded for people (the window keeps full precision)."""
        data = asdict(self)
        for key in ("last", "min", "max", "mean"):
            data[key] = round(data[key], 3)
        data["id"] = self.fact_id
        return data


@dataclass(frozen=True, slots=True)
class Window:
    """Time bounds of the facts behind one summary."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Summary:
    """What we publish, retained, on ``<base>/<node_id>/summary``."""

    title: str
    text: str
    window: Window
    facts: tuple[MetricFacts, ...]
    model: str
    latency_s: float
    prompt_tokens: int
    new_tokens: int
    stop_reason: str
    area: str | None = None
    fallback: bool = False

    def to_payload(self) -> bytes:
        """Encode as the versioned JSON document subscribers receive."""
        doc = {
            "schema_version": SCHEMA_VERSION,
            "title": self.title,
            "text": self.text,
            "area": self.area,
            "window": {"start": self.window.start, "end": self.window.end},
            "facts": [f.to_dict() for f in self.facts],
            "model": self.model,
            "latency_s": round(self.latency_s, 3),
            "tokens": {"prompt": self.prompt_tokens, "new": self.new_tokens},
            "stop_reason": self.stop_reason,
            "fallback": self.fallback,
        }
        return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A payload we could not use, published on ``<base>/<node_id>/deadletter``."""

    reason: str
    detail: str
    topic: str
    payload: bytes
    received_at: float
    max_echo: int = field(default=512, repr=False)

    def to_payload(self) -> bytes:
        """Encode with a truncated, lossless-where-possible copy of the payload."""
        echo = self.payload[: self.max_echo].decode("utf-8", errors="replace")
        doc = {
            "schema_version": SCHEMA_VERSION,
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "payload": echo,
            "payload_bytes": len(self.payload),
            "truncated": len(self.payload) > self.max_echo,
            "received_at": self.received_at,
        }
        return json.dumps(doc, ensure_ascii=False).encode()


def is_finite_number(value: object) -> bool:
    """True for ints and floats that are not NaN/inf (bools are not numbers here)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
