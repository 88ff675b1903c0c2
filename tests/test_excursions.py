"""The threshold lifecycle: started, reminder only with repeat_s, resolved with hysteresis,
and the open excursions surviving a restart through the state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.alertstate import AlertState, AlertStateFile
from edge_agent.anomalies import AnomalyDetector
from edge_agent.domain import Anomaly, SensorEvent
from edge_agent.excursions import ExcursionTracker, Limits
from edge_agent.facts import WindowStore


def _co2(value: float, ts: float, device: str = "desk") -> SensorEvent:
    return SensorEvent(device, "co2", value, ts, f"z/{device}", "ppm", "office")


def _run(tracker: ExcursionTracker, series: list[tuple[float, float]]) -> list[Anomaly]:
    out: list[Anomaly] = []
    for ts, value in series:
        out += tracker.update(_co2(value, ts))
    return out


def _phases(raised: list[Anomaly]) -> list[tuple[str | None, float]]:
    return [(a.phase, a.ts) for a in raised]


def test_crossing_starts_and_coming_back_resolves_with_duration_and_peak() -> None:
    tracker = ExcursionTracker({"co2": Limits(max=1000)})
    series = [(0, 900), (60, 1010), (120, 1250), (180, 1487), (240, 1200), (300, 940)]
    raised = _run(tracker, series)
    assert _phases(raised) == [("started", 60), ("resolved", 300)]
    started, resolved = raised
    assert (started.value, started.threshold, started.started_at) == (1010, 1000, 60)
    assert started.duration_s is None
    assert (resolved.duration_s, resolved.peak, resolved.started_at) == (240, 1487, 60)
    assert resolved.excursion_id == started.excursion_id == "desk.co2.60"
    assert resolved.message == (
        "desk co2 is back below the 1000 ppm limit (940 ppm) after 4 min; peak 1487 ppm"
    )
    doc = json.loads(resolved.to_payload())
    assert (doc["event_type"], doc["kind"], doc["phase"]) == ("resolved", "threshold", "resolved")
    assert (doc["duration_s"], doc["peak"], doc["started_at"]) == (240, 1487, 60)
    assert doc["excursion_id"] == "desk.co2.60"
    assert tracker.open_in("office") == ()


def test_flapping_within_the_hysteresis_band_gives_one_start_and_one_end() -> None:
    tracker = ExcursionTracker({"co2": Limits(max=1000, hysteresis=0.05)})
    # Hovering at the limit: 951..1049 never goes back to 950 or below.
    flaps = [(60.0 * i, 1049 if i % 2 else 951) for i in range(1, 40)]
    raised = _run(tracker, [(0, 900), *flaps, (2400, 950)])
    assert _phases(raised) == [("started", 60), ("resolved", 2400)]
    assert raised[1].peak == 1049


def test_an_absolute_hysteresis_serves_limits_near_zero() -> None:
    tracker = ExcursionTracker({"temperature": Limits(min=0.0, hysteresis_abs=1.0)})
    events = [
        SensorEvent("pipe", "temperature", v, t, "z/pipe", "°C", "cellar")
        for t, v in [(0, 2.0), (60, -0.5), (120, 0.4), (180, -1.5), (240, 0.9), (300, 1.0)]
    ]
    raised = [a for e in events for a in tracker.update(e)]
    assert _phases(raised) == [("started", 60), ("resolved", 300)]
    assert raised[1].peak == -1.5
    assert "back above the 0 °C limit" in raised[1].message


def test_no_reminders_without_repeat_s_however_long_it_lasts() -> None:
    tracker = ExcursionTracker({"co2": Limits(max=1000)})
    raised = _run(tracker, [(60.0 * i, 1200) for i in range(24 * 60)])  # a whole day
    assert _phases(raised) == [("started", 0)]


def test_reminders_every_repeat_s_while_it_lasts() -> None:
    tracker = ExcursionTracker({"co2": Limits(max=1000, repeat_s=1800)})
    raised = _run(tracker, [(60.0 * i, 1100 + i) for i in range(100)] + [(6000, 800)])
    assert _phases(raised) == [
        ("started", 0),
        ("reminder", 1800),
        ("reminder", 3600),
        ("reminder", 5400),
        ("resolved", 6000),
    ]
    reminder = raised[1]
    assert (reminder.duration_s, reminder.peak, reminder.event_type) == (1800, 1130, "reminder")
    assert reminder.message == (
        "desk co2 is still above the 1000 ppm limit: 1130 ppm after 30 min, peak 1130 ppm"
    )


def test_a_reading_beyond_the_other_limit_ends_one_excursion_and_starts_another() -> None:
    tracker = ExcursionTracker({"co2": Limits(min=300, max=1000)})
    raised = _run(tracker, [(0, 1100), (60, 250), (120, 600)])
    assert [(a.phase, a.threshold) for a in raised] == [
        ("started", 1000),
        ("resolved", 1000),
        ("started", 300),
        ("resolved", 300),
    ]


def test_each_device_has_its_own_excursion_and_open_in_lists_an_area() -> None:
    tracker = ExcursionTracker({"co2": Limits(max=1000)})
    tracker.update(_co2(1100, 10, "a"))
    tracker.update(_co2(1200, 20, "b"))
    tracker.update(SensorEvent("c", "co2", 1300, 30, "z/c", "ppm", "hall"))
    assert [(e.device, e.started_at) for e in tracker.open_in("office")] == [("a", 10), ("b", 20)]
    assert [e.device for e in tracker.open_in("hall")] == ["c"]
    assert tracker.open_in("attic") == ()


def test_restart_recovers_the_start_and_does_not_announce_again(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    first = AnomalyDetector(thresholds={"co2": {"max": 1000, "repeat_s": 3600}})
    store = WindowStore(600)
    raised = [a for v, t in [(900, 0), (1100, 60), (1400, 120)] for a in _check(first, store, v, t)]
    assert _phases(raised) == [("started", 60)]
    AlertStateFile(path).save(AlertState(first.excursions.snapshot()))

    # A new process: the same settings, the saved file.
    second = AnomalyDetector(thresholds={"co2": {"max": 1000, "repeat_s": 3600}})
    kept = second.excursions.restore(
        AlertStateFile(path).load().excursions, now=200, max_age_s=86400
    )
    assert len(kept) == 1
    (open_,) = second.open_in("office")
    assert (open_.started_at, open_.peak) == (60, 1400)
    store = WindowStore(600)
    raised = [
        a for v, t in [(1300, 240), (1250, 3660), (900, 4000)] for a in _check(second, store, v, t)
    ]
    # No second 'started'; the reminder counts from the start before the restart.
    assert _phases(raised) == [("reminder", 3660), ("resolved", 4000)]
    assert (raised[1].duration_s, raised[1].peak) == (3940, 1400)


def _check(detector: AnomalyDetector, store: WindowStore, value: float, ts: float) -> list[Anomaly]:
    event = _co2(value, ts)
    store.add(event)
    return detector.check(event, store)


def test_restore_drops_gone_sensors_and_metrics_and_applies_a_changed_limit() -> None:
    before = ExcursionTracker({"co2": Limits(max=1000), "voc": Limits(max=5)})
    before.update(_co2(1100, 0, "a"))
    before.update(_co2(1100, 50_000, "b"))
    before.update(SensorEvent("a", "voc", 9, 50_000, "z/a", None, "office"))
    after = ExcursionTracker({"co2": Limits(max=1200)})
    kept = after.restore(before.snapshot(), now=90_000, max_age_s=86_400 // 2)
    assert [(r.excursion.device, r.excursion.limit) for r in kept] == [("b", 1200)]
    # 1100 is inside the new limit by less than 5 %... of 1200 that is 60: 1100 <= 1140 ends it.
    (resolved,) = after.update(_co2(1100, 90_060, "b"))
    assert resolved.phase == "resolved"


def test_the_state_file_is_atomic_json_and_a_bad_one_means_empty(tmp_path: Path) -> None:
    tracker = ExcursionTracker({"co2": Limits(max=1000)})
    tracker.update(_co2(1100, 5))
    state_file = AlertStateFile(tmp_path / "alerts.json")
    assert state_file.load() == AlertState()  # none yet
    assert state_file.save(AlertState(tracker.snapshot(), ("x.co2.1",)))
    doc = json.loads((tmp_path / "alerts.json").read_text())
    assert doc["schema_version"] == 1
    assert doc["excursions"][0]["started_at"] == 5
    assert list(tmp_path.iterdir()) == [tmp_path / "alerts.json"]  # no temporary left over
    loaded = state_file.load()
    assert loaded.silenced == ("x.co2.1",)
    assert loaded.excursions == tracker.snapshot()
    (tmp_path / "alerts.json").write_text('{"excursions": [{"device": "x"}]}')
    assert state_file.load() == AlertState()
    (tmp_path / "alerts.json").write_text("not json")
    assert state_file.load() == AlertState()


def test_an_unwritable_state_file_is_reported_not_raised(tmp_path: Path) -> None:
    state_file = AlertStateFile(tmp_path / "missing-dir" / "alerts.json")
    assert state_file.save(AlertState()) is False


@pytest.mark.parametrize("limits", [Limits(max=1000), Limits(min=10)])
def test_readings_inside_the_limits_raise_nothing(limits: Limits) -> None:
    tracker = ExcursionTracker({"co2": limits})
    assert _run(tracker, [(0, 500), (60, 999), (120, 10)]) == []
    assert not tracker.dirty
