"""The alert rules on real data: six days of an office (UCI occupancy), before and after.

Before is the old behaviour (a threshold anomaly again every cooldown, no resolved, no
explained changes, no rate limit), rebuilt by ``edge_agent.bench.alerts``; after is the
default configuration with a CO2 limit of 1,000 ppm.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from edge_agent.anomalies import AnomalyDetector
from edge_agent.bench.alerts import (
    before_detector,
    events,
    lifecycle_check,
    read_rows,
    replay,
    transitions,
    zscores_near,
)
from edge_agent.ratelimit import NotificationLimiter, RateLimits
from edge_agent.settings import Settings
from tests.support.agent import run_cli
from tests.support.data import uci_occupancy

UCI = uci_occupancy()

pytestmark = pytest.mark.skipif(
    not (UCI / "datatraining.txt").is_file(), reason=f"UCI occupancy data not present at {UCI}"
)


def _settings() -> Settings:
    return Settings(anomalies={"thresholds": {"co2": {"max": 1000}}})


def _store(settings: Settings) -> dict[str, Any]:
    """The window store as the agent builds it."""
    return {"window_s": settings.summary.window_s, "facts": settings.facts.model_dump()}


def test_each_excursion_starts_once_resolves_once_and_nothing_explained_is_an_anomaly() -> None:
    settings = _settings()
    anomalies = settings.anomalies.model_dump()
    rows = read_rows(UCI)
    readings = events(rows)
    before = replay(
        readings, before_detector(anomalies), limiter=None, old=True, **_store(settings)
    )
    detector = AnomalyDetector(**anomalies)
    after = replay(readings, detector, limiter=None, old=False, **_store(settings))

    checks = lifecycle_check(after.published)
    assert checks["excursions"] >= 3  # CO2 went over 1,000 ppm on several days
    assert checks["one_started_one_resolved"] + checks["still_open"] == checks["excursions"]
    assert checks["still_open"] <= 1
    assert checks["reminders"] == 0  # no repeat_s: no reminders
    # Before, each excursion repeated every cooldown.
    old_threshold = [a for a in before.published if a.kind == "threshold"]
    assert len(old_threshold) > 3 * checks["excursions"]

    marks = transitions(rows, settings.anomalies.level_transitions["light"])
    window = settings.anomalies.explain_window_s
    # Also with a stricter idea of "the light changed" than ours (steps of 100 lx).
    assert zscores_near(after.published, transitions(rows, 100.0), window) == 0
    near_before = zscores_near(before.published, marks, window)
    assert near_before > 10  # arrivals, lights on and off
    assert zscores_near(after.published, marks, window) == 0

    zscores_before = sum(1 for a in before.published if a.kind == "zscore")
    zscores_after = sum(1 for a in after.published if a.kind == "zscore")
    explained = detector.explainer.explained_total
    # Every z-score the old agent raised is either still raised or replaced by a finding.
    assert zscores_after + explained == zscores_before
    assert explained >= near_before  # each one next to a transition became a finding
    assert len(after.findings) == explained
    causes = Counter(c.cause_metric for c in after.findings)
    assert set(causes) <= {"occupancy", "light"}
    assert causes["occupancy"] > 0


def test_the_morning_light_is_explained_by_the_arrival() -> None:
    settings = _settings()
    rows = read_rows(UCI)
    detector = AnomalyDetector(**settings.anomalies.model_dump())
    after = replay(events(rows), detector, limiter=None, old=False, **_store(settings))
    arrivals = {ts for ts, cause in transitions(rows) if cause == "occupancy"}
    by_arrival = [c for c in after.findings if c.cause_metric == "occupancy"]
    assert any(c.metric == "light" and c.value > 300 for c in by_arrival)
    for change in after.findings:
        assert abs(change.cause_ts - change.ts) <= settings.anomalies.explain_window_s
        if change.cause_metric == "occupancy":
            assert change.cause_ts in arrivals


def test_rate_limits_keep_a_day_to_a_few_notifications() -> None:
    settings = _settings()
    readings = events(read_rows(UCI))
    limits = RateLimits(per_metric=2, per_area=4, total=6)
    after = replay(
        readings,
        AnomalyDetector(**settings.anomalies.model_dump()),
        limiter=NotificationLimiter(limits),
        old=False,
        **_store(settings),
    )
    for day, count in after.notifications.items():
        assert count <= 12, day
    notified = [a for a in after.published if a.notify and a.phase != "resolved"]
    hourly: Counter[int] = Counter(int(a.ts // 3600) for a in notified)
    assert max(hourly.values()) <= limits.total


def test_the_bench_command_prints_before_and_after_per_day() -> None:
    result = run_cli("bench", "alerts", "--data", str(UCI), "--max", "co2=1000", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["rows"] == 8143
    days = {d["day"]: d for d in doc["days"]}
    assert len(days) == 7  # 2015-02-04 evening to 2015-02-10 morning
    before = sum(d["before_notifications"] for d in days.values())
    after = sum(d["after_notifications"] for d in days.values())
    assert after * 3 < before
    checks = doc["checks"]
    assert checks["excursions"] == checks["one_started_one_resolved"] + checks["still_open"]
    assert (checks["reminders"], checks["zscore_near_transition"]) == (0, 0)
    bad = run_cli("bench", "alerts", "--data", str(UCI), "--max", "co2")
    assert bad.returncode != 0
    assert "METRIC=NUMBER" in bad.stderr
