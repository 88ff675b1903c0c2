"""Domain and wire types. Each type that crosses MQTT owns its codec.

This module imports nothing from the package: every other module may import it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

SCHEMA_VERSION = 1
"""Version of every JSON message edge-agent publishes; bumped on breaking changes."""

ONLINE = "online"
OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Topics:
    """Our own topics, all under ``<base>/<node_id>/``: spelled once (:meth:`under`) and
    shared by the app, the agent, the actions and the status reporter."""

    summary: str
    deadletter: str
    anomaly: str
    ask: str
    answer: str
    status: str = ""
    availability: str = ""
    alert: str = ""
    action_event: str = ""
    action_approve: str = ""
    action_reject: str = ""
    action_pending: str = ""

    @classmethod
    def under(cls, root: str) -> Topics:
        """Every topic of ours below ``root`` (``<base_topic>/<node_id>``)."""
        if not root or any(c in root for c in "+#") or "//" in root or root.endswith("/"):
            raise ValueError(f"{root!r} is not a topic root: no wildcards or empty levels")

        def at(leaf: str) -> str:
            return f"{root}/{leaf}"

        return cls(
            summary=at("summary"),
            deadletter=at("deadletter"),
            anomaly=at("anomaly"),
            ask=at("ask"),
            answer=at("answer"),
            status=at("status"),
            availability=at("availability"),
            alert=at("alert"),
            action_event=at("action/event"),
            action_approve=at("action/approve"),
            action_reject=at("action/reject"),
            action_pending=at("action/pending"),
        )

    @property
    def stream(self) -> str:
        """Where tokens stream while a summary is generated."""
        return f"{self.summary}/stream"

    def area_summary(self, area: str) -> str:
        """The retained summary of one area."""
        return f"{self.summary}/{area}"

    def area_alert(self, area: str | None) -> str:
        """The retained "alert active" state of one area, or of the whole agent."""
        return self.alert if area is None else f"{self.alert}/{area}"


@dataclass(frozen=True, slots=True)
class SensorEvent:
    """One reading of one metric of one device, normalised from any payload shape."""

    device: str
    metric: str
    value: float
    ts: float
    """Reading time, seconds since the epoch: the payload's own time when it carries
    one (``edge_agent.ingest.timing``), else the receive time."""
    topic: str
    unit: str | None = None
    area: str | None = None
    late: bool = False
    """Received well after it was taken (or retained): kept at ``ts`` in the window, but
    not used for jump or z-score anomalies."""


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
    slope_per_h: float | None = None
    """Least-squares trend over the window in unit/hour; None under two readings."""
    rate_per_min: float | None = None
    """Last reading minus the one before it, per minute of time between them."""
    changes: tuple[tuple[float, float], ...] = ()
    """(ts, new value) transitions of a binary (0/1) metric inside the window, oldest first."""
    stale: bool = False
    """No reading for longer than the configured multiple of ``interval_s``."""
    interval_s: float | None = None
    """Usual time between readings (median of recent gaps); None until enough are seen."""

    @property
    def fact_id(self) -> str:
        """Stable id used to cite this fact from a summary."""
        return f"{self.device}.{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, rounded for people (the window keeps full precision)."""
        # Field by field, not asdict(): its deep copies made a thousand facts cost 0.3 s.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("last", "min", "max", "mean", "slope_per_h", "rate_per_min"):
            if data[key] is not None:
                data[key] = round(data[key], 3)
        if self.interval_s is not None:
            data["interval_s"] = round(self.interval_s, 1)
        data["changes"] = [{"ts": ts, "value": value} for ts, value in self.changes]
        data["id"] = self.fact_id
        return data


AnomalyKind = Literal["threshold", "zscore", "jump", "stale"]


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One detected anomaly, published on ``<base>/<node_id>/anomaly``.

    ``threshold`` is the limit crossed (threshold: the bound; jump: the configured step;
    stale: the allowed silence in seconds); ``z`` is set for z-score anomalies only.
    """

    kind: AnomalyKind
    device: str
    metric: str
    value: float
    ts: float
    """When it was detected (the reading's time; for stale, the check's time)."""
    message: str
    unit: str | None = None
    area: str | None = None
    threshold: float | None = None
    z: float | None = None
    last_ts: float | None = None
    """Time of the last reading, for stale anomalies."""
    phase: ExcursionPhase | None = None
    """Threshold anomalies only: where the excursion is in its lifecycle."""
    started_at: float | None = None
    """Threshold anomalies only: when the excursion began."""
    peak: float | None = None
    """Threshold anomalies only: the value furthest beyond the limit so far."""
    duration_s: float | None = None
    """Threshold reminders and resolutions: how long the excursion has lasted."""
    notify: bool = True
    """False when a rate limit holds back the notification of a lifecycle event that is
    still published (so every excursion keeps its one started and one resolved)."""

    @property
    def event_type(self) -> str:
        """``started``/``reminder``/``resolved`` for a threshold excursion, else the kind."""
        return self.phase or self.kind

    @property
    def excursion_id(self) -> str | None:
        """Stable id of the excursion a lifecycle event belongs to (a notification tag)."""
        if self.phase is None or self.started_at is None:
            return None
        return f"{self.device}.{self.metric}.{int(self.started_at)}"

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity used to deduplicate: one active anomaly per (device, metric, kind)."""
        return (self.device, self.metric, self.kind)

    def to_payload(self) -> bytes:
        """Encode as the versioned JSON document subscribers receive."""
        doc = {
            "schema_version": SCHEMA_VERSION,
            "event_type": self.event_type,
            "kind": self.kind,
            "phase": self.phase,
            "device": self.device,
            "area": self.area,
            "metric": self.metric,
            "value": round(self.value, 3),
            "unit": self.unit,
            "threshold": None if self.threshold is None else round(self.threshold, 3),
            "z": None if self.z is None else round(self.z, 2),
            "ts": self.ts,
            "last_ts": self.last_ts,
            "message": self.message,
            "notify": self.notify,
        }
        if self.phase is not None:
            doc["excursion_id"] = self.excursion_id
            doc["started_at"] = self.started_at
            doc["peak"] = None if self.peak is None else round(self.peak, 3)
            doc["duration_s"] = None if self.duration_s is None else round(self.duration_s, 1)
        return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode()


ExcursionPhase = Literal["started", "reminder", "resolved"]


@dataclass(frozen=True, slots=True)
class Excursion:
    """One threshold excursion of one metric: from crossing its limit until back inside.

    Owned by the alert lifecycle (``excursions.py``); findings and summaries read it to say
    "CO2 has been above 1,000 ppm since 10:05, peak 1,487 ppm".
    """

    device: str
    metric: str
    limit: float
    """The configured bound that was crossed."""
    direction: Literal["above", "below"]
    started_at: float
    """Time of the reading that crossed the limit, seconds since the epoch."""
    peak: float
    """The value furthest beyond the limit so far."""
    last: float
    """The latest reading."""
    unit: str | None = None
    area: str | None = None
    resolved_at: float | None = None
    """Time the value came back inside the limit by the hysteresis margin; None while open."""

    @property
    def open(self) -> bool:
        """True while the value has not come back inside the limit."""
        return self.resolved_at is None

    @property
    def id(self) -> str:
        """Stable id, the same as its lifecycle anomalies' ``excursion_id``."""
        return f"{self.device}.{self.metric}.{int(self.started_at)}"


@dataclass(frozen=True, slots=True)
class ExplainedChange:
    """A jump or unusual level that a state change nearby explains: a finding, not an anomaly.

    Made by ``explain.py`` instead of a z-score or jump anomaly, e.g. the office light going
    from 0 to 450 lx one minute after the office became occupied.
    """

    device: str
    metric: str
    value: float
    previous: float | None
    """The reading before, when known."""
    ts: float
    kind: AnomalyKind
    """What it would have been: ``zscore`` or ``jump``."""
    cause_device: str
    cause_metric: str
    cause_value: float
    """The state the cause changed to (1.0 on/open/occupied, 0.0 off; a level for lights)."""
    cause_ts: float
    unit: str | None = None
    area: str | None = None
    cause_previous: float | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """Time bounds of the facts behind one summary."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Summary:
    """What we publish, retained, on ``<base>/<node_id>/summary`` (and per area)."""

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
    fallback_reason: str = ""
    """Why the model's text was replaced: ``grounding: ...``, ``deadline``, ``empty``."""
    severity: Literal["info", "warning", "alert"] = "info"
    prompt_version: str = ""

    def to_payload(self) -> bytes:
        """Encode as the versioned JSON document subscribers receive."""
        doc = {
            "schema_version": SCHEMA_VERSION,
            "title": self.title,
            "text": self.text,
            "area": self.area,
            "severity": self.severity,
            "window": {"start": self.window.start, "end": self.window.end},
            "fact_ids": [f.fact_id for f in self.facts],
            "facts": [f.to_dict() for f in self.facts],
            "model": self.model,
            "prompt_version": self.prompt_version,
            "latency_s": round(self.latency_s, 6),
            "tokens": {"prompt": self.prompt_tokens, "new": self.new_tokens},
            "stop_reason": self.stop_reason,
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
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
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class AskRequest:
    """A question on ``<base>/<node_id>/ask``.

    MQTT 5 clients set ResponseTopic and CorrelationData; MQTT 3.1.1 clients and Home
    Assistant automations send ``{"id": ..., "q": ..., "reply_to": ...}`` instead (or
    the bare question as text), and get their ``id`` echoed.
    """

    question: str
    reply_to: str
    id: str | None = None
    correlation_data: bytes | None = None
    expires_at: float | None = None

    @classmethod
    def from_payload(
        cls,
        payload: bytes,
        *,
        default_reply_to: str,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry_s: float | None = None,
        now: float,
    ) -> AskRequest:
        """Decode a request; raises ValueError with a reason a person can read."""
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ValueError("question is not valid UTF-8") from exc
        ident: str | None = None
        reply_to = response_topic or default_reply_to
        if text.startswith("{"):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"question JSON is invalid: {exc.msg}") from exc
            except RecursionError as exc:  # the agent checks depth first; this is a backstop
                raise ValueError("question JSON is nested too deep") from exc
            if not isinstance(doc, dict) or not isinstance(doc.get("q"), str):
                raise ValueError('expected {"q": "<question>", "id": ..., "reply_to": ...}')
            text = doc["q"].strip()
            ident = None if doc.get("id") is None else str(doc["id"])
            if response_topic is None and isinstance(doc.get("reply_to"), str):
                reply_to = doc["reply_to"]
        if not text:
            raise ValueError("the question is empty")
        if "+" in reply_to or "#" in reply_to:
            raise ValueError(f"reply_to {reply_to!r} contains a wildcard")
        expires = None if expiry_s is None else now + expiry_s
        return cls(text[:1000], reply_to, ident, correlation_data, expires)

    def error_payload(self, error: str) -> bytes:
        """The reply when no answer comes: ``busy`` (dropped from a full backlog),
        ``expired`` (its message expiry passed) or ``internal_error``; ``id`` echoed."""
        doc = {"schema_version": SCHEMA_VERSION, "id": self.id, "error": error}
        return json.dumps(doc, ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to an :class:`AskRequest`."""

    request: AskRequest
    text: str
    facts: tuple[str, ...]
    model: str
    latency_s: float
    fallback: bool = False
    reason: str = ""

    def to_payload(self) -> bytes:
        """Encode; the request's ``id`` is echoed for 3.1.1 clients."""
        doc = {
            "schema_version": SCHEMA_VERSION,
            "id": self.request.id,
            "q": self.request.question,
            "answer": self.text,
            "facts": list(self.facts),
            "model": self.model,
            "latency_s": round(self.latency_s, 6),
            "fallback": self.fallback,
            "reason": self.reason,
        }
        return json.dumps(doc, ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Status:
    """Health of one agent, retained on ``<base>/<node_id>/status``."""

    version: str
    model: str
    uptime_s: float
    events_per_s: float
    queue_depth: int
    outbox_size: int
    decode_tok_s: float | None
    last_error: str | None
    counters: dict[str, int] = field(default_factory=dict)
    backend: dict[str, object] | None = None
    """The model backend's health (``model.backend = "openai"``): state, since, errors."""

    def to_payload(self) -> bytes:
        """Encode as the versioned JSON document subscribers receive."""
        doc = {
            "schema_version": SCHEMA_VERSION,
            "version": self.version,
            "model": self.model,
            "uptime_s": round(self.uptime_s, 3),
            "events_per_s": round(self.events_per_s, 2),
            "queue_depth": self.queue_depth,
            "outbox_size": self.outbox_size,
            "decode_tok_s": None if self.decode_tok_s is None else round(self.decode_tok_s, 2),
            "last_error": self.last_error,
            **self.counters,
        }
        if self.backend is not None:
            return json.dumps({**doc, "backend": self.backend}, ensure_ascii=False).encode()
        return json.dumps(doc, ensure_ascii=False).encode()
