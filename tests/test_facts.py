"""Windows and facts: deterministic, bounded by time."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from edge_agent.domain import SensorEvent
from edge_agent.facts import WindowStore
from edge_agent.findings import FindingRules, find
from edge_agent.prompts import TITLE_MAX, summary_prompt, summary_title
from edge_agent.semantics import Naming
from edge_agent.settings import Settings


def _event(
    value: float, ts: float, device: str = "kitchen", metric: str = "temperature"
) -> SensorEvent:
    return SensorEvent(
        device=device, metric=metric, value=value, ts=ts, topic=f"z/{device}", unit="°C"
    )


def test_facts_are_last_min_max_mean_count() -> None:
    store = WindowStore(window_s=60)
    store.add_all([_event(20.0, 100), _event(23.0, 110), _event(21.0, 120)])
    (fact,) = store.facts(now=130)
    assert (fact.last, fact.min, fact.max, fact.count) == (21.0, 20.0, 23.0, 3)
    assert fact.mean == pytest.approx(64 / 3)
    assert (fact.first_ts, fact.last_ts) == (100, 120)


def test_old_readings_leave_the_window() -> None:
    store = WindowStore(window_s=60)
    store.add_all([_event(50.0, 0), _event(20.0, 100)])
    (fact,) = store.facts(now=110)
    assert (fact.count, fact.max) == (1, 20.0)
    assert store.facts(now=1000) == ()


def test_series_are_kept_apart_and_sorted() -> None:
    store = WindowStore(window_s=60)
    store.add_all([_event(1, 1, "b"), _event(2, 1, "a", "humidity"), _event(3, 1, "a")])
    assert [f.fact_id for f in store.facts(now=2)] == [
        "a.humidity",
        "a.temperature",
        "b.temperature",
    ]


def test_title_is_capped_for_home_assistant() -> None:
    store = WindowStore(window_s=60)
    store.add_all([_event(i, 1, f"device-{i:03d}") for i in range(100)])
    found = find(store.facts(now=2), rules=FindingRules(), names=Naming())
    title = summary_title("A room with a very long name " * 12, found.items)
    assert len(title) <= TITLE_MAX
    assert title.endswith("…")


def test_prompt_carries_the_findings_not_the_raw_facts() -> None:
    store = WindowStore(window_s=300)
    store.add_all([_event(20.25, 1), _event(22.0, 2)])
    found = find(store.facts(now=3), rules=FindingRules(), names=Naming())
    prompt = summary_prompt("Kitchen", found.items, style="chat")
    assert "- temperature 22.0 °C" in prompt.dynamic
    assert "min" not in prompt.dynamic
    assert prompt.fact_ids == ("kitchen.temperature",)
    assert "Use only the notes' numbers" in prompt.static


def _reading(
    value: float,
    ts: float,
    device: str = "kitchen",
    metric: str = "temperature",
    unit: str | None = "°C",
    area: str | None = None,
) -> SensorEvent:
    return SensorEvent(device, metric, value, ts, f"z/{device}", unit, area)


def test_slope_of_a_linear_ramp_is_per_hour() -> None:
    store = WindowStore(window_s=3600)
    # 0.5 °C a minute for ten minutes: 30 °C/h, whatever the epoch offset.
    store.add_all([_reading(20 + 0.5 * i, 1.7e9 + 60 * i) for i in range(11)])
    (fact,) = store.facts(now=1.7e9 + 600)
    assert fact.slope_per_h == pytest.approx(30.0)
    assert fact.rate_per_min == pytest.approx(0.5)


def test_slope_is_none_for_a_single_reading_and_flat_for_a_constant() -> None:
    store = WindowStore(window_s=600)
    store.add(_reading(20, 0))
    (fact,) = store.facts(now=1)
    assert (fact.slope_per_h, fact.rate_per_min) == (None, None)
    store.add_all([_reading(20, 60), _reading(20, 120)])
    (fact,) = store.facts(now=121)
    assert fact.slope_per_h == pytest.approx(0.0)


def test_rate_compares_the_last_two_readings_per_minute() -> None:
    store = WindowStore(window_s=600)
    store.add_all([_reading(20, 0), _reading(20, 60), _reading(23, 90)])
    (fact,) = store.facts(now=100)
    assert fact.rate_per_min == pytest.approx(6.0)  # +3 in 30 s


def test_rate_uses_the_reading_before_the_window() -> None:
    store = WindowStore(window_s=60)
    store.add_all([_reading(10, 0), _reading(12, 120)])
    (fact,) = store.facts(now=130)
    assert (fact.count, fact.rate_per_min) == (1, pytest.approx(1.0))


def _contact(value: float, ts: float) -> SensorEvent:
    return _reading(value, ts, device="door", metric="contact", unit=None)


def test_binary_transitions_are_listed_with_their_times() -> None:
    store = WindowStore(window_s=600)
    store.add_all([_contact(v, t) for v, t in [(1, 0), (1, 10), (0, 20), (0, 30), (1, 40)]])
    (fact,) = store.facts(now=50)
    assert fact.changes == ((20, 0.0), (40, 1.0))
    assert fact.to_dict()["changes"] == [{"ts": 20, "value": 0.0}, {"ts": 40, "value": 1.0}]


def test_transitions_are_bounded_and_leave_with_the_window() -> None:
    store = WindowStore(window_s=100, max_changes=3)
    store.add_all([_contact(i % 2, i) for i in range(10)])
    (fact,) = store.facts(now=10)
    assert fact.changes == ((7, 1.0), (8, 0.0), (9, 1.0))
    store.add(_contact(1, 100))
    (fact,) = store.facts(now=108)  # window starts at 8
    assert fact.changes == ((8, 0.0), (9, 1.0))


def test_measured_quantities_have_no_transitions() -> None:
    store = WindowStore(window_s=600)
    # 0 and 1 lx are readings, not states: a unit marks a measured quantity.
    store.add_all([_reading(v, t, metric="illuminance", unit="lx") for v, t in [(0, 0), (1, 1)]])
    # Without a unit, any value but 0/1 also marks it as measured, for good.
    store.add_all([_reading(v, t, metric="level", unit=None) for v, t in [(0, 0), (1, 1), (5, 2)]])
    store.add(_reading(0, 3, metric="level", unit=None))
    assert [f.changes for f in store.facts(now=4)] == [(), ()]


def test_stale_after_factor_times_the_usual_interval() -> None:
    store = WindowStore(window_s=3600, stale_factor=3)
    store.add_all([_reading(20, 60 * i) for i in range(6)])  # every minute until 300
    (fact,) = store.facts(now=300 + 170)
    assert (fact.stale, fact.interval_s) == (False, 60)
    (fact,) = store.facts(now=300 + 190)
    assert fact.stale
    assert [(s.device, s.last_ts, s.limit_s) for s in store.silent(now=490)] == [
        ("kitchen", 300, 180)
    ]


def test_stale_sensor_is_reported_after_its_readings_left_the_window() -> None:
    store = WindowStore(window_s=600, forget_after_s=7200)
    store.add_all([_reading(20 + i, 60 * i) for i in range(6)])
    (fact,) = store.facts(now=5000)
    assert (fact.stale, fact.count, fact.last, fact.last_ts) == (True, 0, 25, 300)
    assert store.facts(now=300 + 7201) == ()  # forgotten


def test_stale_needs_a_known_rhythm_and_a_minimum_silence() -> None:
    store = WindowStore(window_s=600, stale_min_s=600)
    store.add_all([_reading(20, 0), _reading(20, 10)])  # one gap: rhythm unknown
    store.add_all([_reading(1, t, device="fast") for t in range(0, 50, 10)])
    assert store.silent(now=500) == ()  # fast: 10 s rhythm, but the floor is 600 s
    assert [s.device for s in store.silent(now=700)] == ["fast"]


def test_facts_grouped_by_area_with_unknown_area_last() -> None:
    store = WindowStore(window_s=60)
    store.add_all(
        [
            _reading(1, 1, "lamp", area=None),
            _reading(2, 1, "sofa", area="living_room"),
            _reading(3, 1, "oven", area="kitchen"),
            _reading(4, 1, "fridge", area="kitchen"),
        ]
    )
    groups = store.facts_by_area(now=2)
    assert list(groups) == ["kitchen", "living_room", None]
    assert [f.device for f in groups["kitchen"]] == ["fridge", "oven"]
    assert [f.device for f in groups[None]] == ["lamp"]


def test_shorter_window_over_a_longer_baseline() -> None:
    store = WindowStore(window_s=60, baseline_s=600)
    store.add_all([_reading(v, t) for v, t in [(30, 0), (20, 500), (22, 550)]])
    (fact,) = store.facts(now=560)
    assert (fact.count, fact.max) == (2, 22)
    (fact,) = store.facts(now=560, window_s=600)
    assert (fact.count, fact.max) == (3, 30)
    base = store.baseline(_reading(0, 561))
    assert base is not None
    assert base.count == 3


def test_running_sums_match_a_rescan_after_many_evictions() -> None:
    rng = random.Random(7)
    store = WindowStore(window_s=100, baseline_s=None)  # the horizon is the window
    values = [1000 + rng.gauss(0, 5) for _ in range(5000)]
    store.add_all([_reading(v, float(t)) for t, v in enumerate(values)])
    probe = _reading(0.0, 5000.0)
    base = store.baseline(probe)
    window = values[-101:]  # readings at ts 4899..4999 are within 100 s of the last
    assert base is not None
    assert base.count == len(window)
    assert base.mean == pytest.approx(statistics.fmean(window), abs=1e-9)
    assert base.std == pytest.approx(statistics.stdev(window), rel=1e-9)
    assert base.previous == values[-1]


def test_points_per_series_are_capped() -> None:
    store = WindowStore(window_s=1e9, max_points_per_series=10)
    store.add_all([_reading(i, i) for i in range(100)])
    (fact,) = store.facts(now=100)
    assert (fact.count, fact.min) == (10, 90)


def test_a_clock_step_back_keeps_the_window_ordered() -> None:
    store = WindowStore(window_s=60)
    store.add_all([_reading(1, 100), _reading(2, 50), _reading(3, 110)])
    (fact,) = store.facts(now=120)
    assert (fact.count, fact.first_ts, fact.last) == (3, 100, 3)


def test_to_dict_rounds_new_fields_and_is_json() -> None:
    store = WindowStore(window_s=3600)
    store.add_all([_reading(20 + i / 3, 60.0 * i) for i in range(5)])
    data = store.facts(now=300)[0].to_dict()
    assert data["slope_per_h"] == 20.0
    assert data["rate_per_min"] == 0.333
    assert (data["stale"], data["interval_s"], data["changes"]) == (False, 60.0, [])
    json.dumps(data, allow_nan=False)


def test_settings_sections_map_onto_the_constructors() -> None:
    settings = Settings()
    store = WindowStore(settings.summary.window_s, **settings.facts.model_dump())
    store.add(_reading(1, 0))
    assert len(store.facts(now=1)) == 1
