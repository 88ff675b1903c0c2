"""What the demo shows: the agent's topics decoded into records, and the live view's state.

Pure: no broker, no terminal. The runner feeds it; ``view.py`` draws it; the JSON-lines
output prints the same records.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

LINE_KINDS = ("broker", "status", "replay", "summary", "anomaly", "deadletter", "action")
"""The ``kind`` of every ``--no-ui`` JSON line; scripts rely on these, keep them stable."""

Record = tuple[str, dict[str, Any]]


def hhmm(t: float) -> str:
    """Simulated seconds of the day as ``HH:MM`` (24:00 at the end)."""
    t = max(0.0, min(t, 24 * 3600.0))
    return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}"


def decode(leaf: str, payload: bytes, sim_time: str) -> Record | None:
    """One message on ``<base>/<node>/<leaf>`` as a record; None for topics not shown.

    Areas' summaries come on ``summary/<area>``; ``summary`` is the whole-home one (area
    None), and an area's alert repeated there gives None, as does ``summary/stream``
    (handled apart); a payload that is not the JSON we expect gives None, not an error.
    """
    try:
        if leaf == "summary" or (leaf.startswith("summary/") and leaf != "summary/stream"):
            doc = json.loads(payload)
            if leaf == "summary" and doc.get("area") is not None:
                return None
            return "summary", _summary(doc, sim_time)
        if leaf == "anomaly":
            doc = _without_schema(json.loads(payload))
            if "kind" in doc:  # the line's own 'kind' is "anomaly"; keep the anomaly's apart
                doc["anomaly_kind"] = doc.pop("kind")
            return "anomaly", {"sim_time": sim_time, **doc}
        if leaf == "deadletter":
            return "deadletter", _without_schema(json.loads(payload))
        if leaf == "action/event":
            return "action", {"sim_time": sim_time, **_without_schema(json.loads(payload))}
        if leaf == "status":
            return "agent", _without_schema(json.loads(payload))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


def _without_schema(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "schema_version"}


def _summary(doc: dict[str, Any], sim_time: str) -> dict[str, Any]:
    return {
        "sim_time": sim_time,
        "area": doc.get("area"),
        "severity": doc.get("severity", "info"),
        "title": doc["title"],
        "text": doc["text"],
        "fallback": bool(doc.get("fallback", False)),
        "fallback_reason": doc.get("fallback_reason", ""),
        "latency_s": doc.get("latency_s"),
        "tokens": doc.get("tokens"),
        "model": doc.get("model"),
        "facts": [
            {
                "id": f["id"],
                "area": f.get("area"),
                "metric": f["metric"],
                "last": f["last"],
                "min": f["min"],
                "max": f["max"],
                "unit": f.get("unit"),
            }
            for f in doc.get("facts", ())
        ],
    }


@dataclass(frozen=True, slots=True)
class FactRow:
    """Last/min/max of one metric, as the agent's latest summary computed it."""

    last: float
    min: float
    max: float
    unit: str | None


@dataclass(slots=True)
class DemoState:
    """Everything the live view draws, updated from records, replayed messages and tokens."""

    speed: float
    broker: str = "starting…"
    model: str = "loading…"
    phase: str = "starting"
    sim_t: float = 0.0
    events: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=10))
    """(sim time, topic, payload) of the latest replayed messages, newest last."""
    event_times: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    events_total: int = 0
    facts: dict[str, dict[str, FactRow]] = field(default_factory=dict)
    """area -> fact id -> row."""
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    """area -> the latest summary record."""
    summaries_total: int = 0
    fallbacks_total: int = 0
    stream: str = ""
    """Text of the generation in progress, or of the last one until the next starts."""
    stream_done: bool = False
    anomalies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5))
    actions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5))
    anomalies_total: int = 0
    deadletters_total: int = 0
    decode_tok_s: float | None = None
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    """Status lines and warnings, newest last."""

    def apply(self, kind: str, fields: dict[str, Any]) -> None:
        """Fold one record (a JSON-line kind, or ``agent`` for the status topic) in."""
        if kind == "broker":
            self.broker = fields.get("name") or fields.get("kind_of", "?")
            self.broker += f" {fields.get('host')}:{fields.get('port')}"
        elif kind == "status":
            self.phase = str(fields.get("message", ""))
            self.notes.append(self.phase)
        elif kind == "summary":
            self._summary(fields)
        elif kind == "anomaly":
            self.anomalies.append(fields)
            self.anomalies_total += 1
        elif kind == "action":
            self.actions.append(fields)
        elif kind == "deadletter":
            self.deadletters_total += 1
        elif kind == "agent":
            self.model = str(fields.get("model") or self.model)
            tok_s = fields.get("decode_tok_s")
            self.decode_tok_s = float(tok_s) if isinstance(tok_s, int | float) else None

    def _summary(self, fields: dict[str, Any]) -> None:
        area = fields.get("area") or "home"
        self.summaries[area] = fields
        self.summaries_total += 1
        self.fallbacks_total += bool(fields.get("fallback"))
        if fields.get("model"):
            self.model = str(fields["model"])
        rows = self.facts.setdefault(area, {})
        for fact in fields.get("facts", ()):
            rows[fact["id"]] = FactRow(fact["last"], fact["min"], fact["max"], fact.get("unit"))
        # Generations run one at a time, so the stream so far belonged to this summary;
        # it stays on screen until the next one starts.
        self.stream_done = True

    def sensor(self, sim_t: float, topic: str, payload: bytes, now: float) -> None:
        """One replayed sensor message; ``now`` is a monotonic time, for the rate."""
        self.sim_t = sim_t
        self.events_total += 1
        self.event_times.append(now)
        self.events.append((hhmm(sim_t), topic, payload.decode("utf-8", errors="replace")))

    def token(self, delta: str, keep: int = 600) -> None:
        """A streamed token delta of the summary being generated."""
        if self.stream_done:
            self.stream, self.stream_done = "", False
        self.stream = (self.stream + delta)[-keep:]

    def rate(self, now: float, span_s: float = 5.0) -> float:
        """Replayed messages per real second over the last ``span_s`` seconds."""
        recent = sum(1 for t in self.event_times if now - t <= span_s)
        return recent / span_s

    def note(self, text: str) -> None:
        """A warning or status line for the footer."""
        self.notes.append(text)
