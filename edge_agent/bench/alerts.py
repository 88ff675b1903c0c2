"""``edge-agent bench alerts``: replay recorded readings through the real detector, before/after.

*Before* is the old behaviour, rebuilt from today's detector: a threshold anomaly again every
``cooldown_s`` while the value stays beyond its limit (a reminder every cooldown), no
``resolved``, 2 % hysteresis, no explained changes and no rate limits; every anomaly was a
phone notification through the shipped blueprint. *After* is the configured behaviour: one
``started`` and one ``resolved`` per excursion, reminders only with ``repeat_s``, jumps and
z-scores next to a state change turned into findings, and the rate limits.

The input is the UCI occupancy CSV (a quoted row id, then ``date`` and one column per
metric); every column becomes a metric of one device in one area.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from edge_agent.anomalies import AnomalyDetector
from edge_agent.domain import Anomaly, ExplainedChange, SensorEvent
from edge_agent.facts import WindowStore
from edge_agent.ratelimit import NotificationLimiter, RateLimits

UNITS: dict[str, str | None] = {
    "temperature": "°C",
    "humidity": "%",
    "light": "lx",
    "co2": "ppm",
    "humidityratio": "kg/kg",
    "occupancy": None,
}
"""Units of the UCI columns (lower-cased); a binary column has none."""

Row = tuple[float, dict[str, float]]


def read_rows(path: Path) -> list[Row]:
    """(epoch seconds, {metric: value}) per row; ``path`` is the CSV or its folder."""
    if path.is_dir():
        path = path / "datatraining.txt"
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = []
        for raw in reader:
            # The header names every column but the quoted row id that leads each row.
            cells = dict(zip(header, raw[-len(header) :], strict=True))
            when = datetime.strptime(cells.pop("date"), "%Y-%m-%d %H:%M:%S")
            values = {name.lower(): float(v) for name, v in cells.items()}
            rows.append((when.replace(tzinfo=UTC).timestamp(), values))
    return rows


def events(rows: Iterable[Row], device: str = "office", area: str = "office") -> list[SensorEvent]:
    """The rows as readings, in the column order of the file."""
    return [
        SensorEvent(device, metric, value, ts, f"uci/{device}", UNITS.get(metric), area)
        for ts, values in rows
        for metric, value in values.items()
    ]


@dataclass
class Replay:
    """What one replay published, per UTC day."""

    anomalies: dict[str, Counter[str]] = field(default_factory=dict)
    """Anomaly events published, by event type."""
    notifications: Counter[str] = field(default_factory=Counter)
    """Events the blueprint turns into a phone notification."""
    suppressed: Counter[str] = field(default_factory=Counter)
    explained: Counter[str] = field(default_factory=Counter)
    """Findings (explained changes) that replaced an anomaly, by the day of the change."""
    published: list[Anomaly] = field(default_factory=list)
    findings: list[ExplainedChange] = field(default_factory=list)

    def add(self, anomaly: Anomaly, *, notify: bool) -> None:
        """Count one published event."""
        day = _day(anomaly.ts)
        self.anomalies.setdefault(day, Counter())[anomaly.event_type] += 1
        if notify:
            self.notifications[day] += 1
        self.published.append(anomaly)


def before_detector(anomalies: Mapping[str, Any]) -> AnomalyDetector:
    """Today's detector set up to behave as before (see the module docstring)."""
    cooldown = float(anomalies.get("cooldown_s", 900.0))
    old = {
        metric: {"min": b.get("min"), "max": b.get("max"), "repeat_s": cooldown}
        for metric, b in anomalies.get("thresholds", {}).items()
    }
    kwargs = {**anomalies, "thresholds": old, "threshold_hysteresis": 0.02, "explained_by": ()}
    kwargs.pop("explain", None)
    return AnomalyDetector(**kwargs)


def replay(
    readings: list[SensorEvent],
    detector: AnomalyDetector,
    *,
    limiter: NotificationLimiter | None,
    old: bool,
    window_s: float,
    facts: Mapping[str, Any],
) -> Replay:
    """Feed ``readings`` through ``detector`` (and ``limiter``) as the agent does;
    ``window_s`` and ``facts`` are the summary window and the ``[facts]`` settings."""
    store = WindowStore(window_s, **facts)
    out = Replay()
    next_tick = readings[0].ts + 60 if readings else 0.0

    def take(anomaly: Anomaly) -> None:
        if old:
            if anomaly.phase != "resolved":  # the old agent had no resolved event
                out.add(anomaly, notify=True)
            return
        decision = "notify" if limiter is None else limiter.decide(anomaly)
        if decision != "notify":
            out.suppressed[_day(anomaly.ts)] += 1
        if decision != "drop":  # 'quiet': published with notify false, no notification
            out.add(anomaly, notify=decision == "notify" and anomaly.phase != "resolved")

    explainer = detector.explainer

    def found(change: ExplainedChange) -> None:
        out.findings.append(change)
        out.explained[_day(change.ts)] += 1

    explainer.on_explained = found
    for event in readings:
        store.add(event)
        for anomaly in detector.check(event, store):
            take(anomaly)
        if event.ts >= next_tick:  # the agent's tick: silent sensors, held candidates
            next_tick = event.ts + 60
            for anomaly in detector.check_stale(store, event.ts):
                take(anomaly)
    if readings:  # let the last held candidates be decided
        for anomaly in explainer.release(readings[-1].ts + explainer.max_window_s + 1):
            take(anomaly)
    explainer.on_explained = None
    return out


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def transitions(rows: list[Row], light_step: float = 100.0) -> list[tuple[float, str]]:
    """Occupancy changes and light steps of at least ``light_step``, to check the bar with."""
    found = []
    for (_, a), (ts, b) in pairwise(rows):
        if "occupancy" in b and a.get("occupancy") != b["occupancy"]:
            found.append((ts, "occupancy"))
        if "light" in b and abs(b["light"] - a.get("light", b["light"])) >= light_step:
            found.append((ts, "light"))
    return found


def lifecycle_check(published: list[Anomaly]) -> dict[str, int]:
    """Per excursion: how many started and resolved; and reminders."""
    starts: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    reminders = 0
    for a in published:
        ident = a.excursion_id
        if ident is None:
            continue
        if a.phase == "started":
            starts[ident] += 1
        elif a.phase == "resolved":
            ends[ident] += 1
        else:
            reminders += 1
    ids = set(starts) | set(ends)
    return {
        "excursions": len(ids),
        "one_started_one_resolved": sum(1 for i in ids if starts[i] == 1 and ends[i] == 1),
        "still_open": sum(1 for i in ids if starts[i] == 1 and ends[i] == 0),
        "other": sum(1 for i in ids if not (starts[i] == 1 and ends[i] <= 1)),
        "reminders": reminders,
    }


def zscores_near(published: list[Anomaly], marks: list[tuple[float, str]], window_s: float) -> int:
    """Z-score anomalies within ``window_s`` of a transition (the bar: 0)."""
    times = [t for t, _ in marks]
    return sum(
        1 for a in published if a.kind == "zscore" and any(abs(a.ts - t) <= window_s for t in times)
    )


def rate_limits(alerts: Mapping[str, Any]) -> RateLimits:
    """The ``[alerts]`` settings as :class:`RateLimits`."""
    return RateLimits(
        period_s=alerts["period_s"],
        per_metric=alerts["per_metric"],
        per_area=alerts["per_area"],
        total=alerts["total"],
        metrics=alerts["metrics"],
        areas=alerts["areas"],
    )
