"""Expected changes are findings: a jump or z-score next to a state change is not an anomaly."""

from __future__ import annotations

import random

from edge_agent.anomalies import AnomalyDetector
from edge_agent.domain import Anomaly, SensorEvent
from edge_agent.facts import WindowStore

AREA = "office"


def _ev(
    metric: str, value: float, ts: float, unit: str | None, device: str = "room"
) -> SensorEvent:
    return SensorEvent(device, metric, value, ts, f"z/{device}", unit, AREA)


class Room:
    """One office: a CO2 sensor, a light sensor and an occupancy sensor, one reading a minute."""

    def __init__(self, detector: AnomalyDetector) -> None:
        self.detector = detector
        self.store = WindowStore(600, baseline_s=3600)
        self.raised: list[Anomaly] = []
        self.rng = random.Random(3)

    def feed(self, event: SensorEvent) -> None:
        self.store.add(event)
        self.raised += self.detector.check(event, self.store)

    def quiet(self, start: int, minutes: int, occupied: float = 0.0, light: float = 0.0) -> None:
        for i in range(start, start + minutes):
            ts = 60.0 * i
            self.feed(_ev("co2", 450 + self.rng.gauss(0, 2), ts, "ppm"))
            self.feed(_ev("light", light + self.rng.gauss(0, 1), ts, "lx"))
            self.feed(_ev("occupancy", occupied, ts, None))

    def tick(self, now: float) -> None:
        """The agent's tick: decides held candidates (silent sensors are not tested here)."""
        self.raised += [a for a in self.detector.check_stale(self.store, now) if a.kind != "stale"]


def test_a_light_coming_on_with_occupancy_is_a_finding_not_an_anomaly() -> None:
    room = Room(AnomalyDetector(explain_window_s=300))
    room.quiet(0, 60)
    # The light reports its step before the occupancy sensor reports the arrival.
    room.feed(_ev("light", 450, 3600, "lx"))
    room.feed(_ev("occupancy", 1.0, 3630, None))
    room.quiet(61, 20, occupied=1.0, light=450)
    room.tick(61 * 60 + 20 * 60 + 400)
    assert [a for a in room.raised if a.metric == "light"] == []
    (change,) = room.detector.explained_in(AREA)
    assert (change.metric, change.kind, change.value) == ("light", "zscore", 450)
    assert change.previous is not None
    assert change.previous < 10
    # The occupancy change is preferred to the light's own step as the cause.
    assert (change.cause_metric, change.cause_value, change.cause_ts) == ("occupancy", 1.0, 3630)


def test_the_same_change_with_nothing_to_explain_it_is_an_anomaly_a_window_later() -> None:
    room = Room(AnomalyDetector(explain_window_s=300, level_transitions={}))
    room.quiet(0, 60)
    room.feed(_ev("light", 450, 3600, "lx"))
    assert room.raised == []  # held while a state change may still come
    room.quiet(61, 4, light=0)
    assert room.raised == []
    room.quiet(65, 3, light=0)  # now past 3600 + 300
    (anomaly,) = room.raised
    assert (anomaly.kind, anomaly.metric, anomaly.ts) == ("zscore", "light", 3600)
    assert room.detector.explained_in(AREA) == ()


def test_a_lamp_step_explains_itself_when_no_sensor_saw_why() -> None:
    room = Room(AnomalyDetector(explain_window_s=300))  # light = 100 lx is a transition
    room.quiet(0, 60)
    room.feed(_ev("light", 450, 3600, "lx"))
    room.quiet(61, 10, light=450)
    assert [a for a in room.raised if a.metric == "light"] == []
    (change,) = room.detector.explained_in(AREA)
    assert (change.cause_device, change.cause_metric, change.cause_value) == ("room", "light", 450)


def test_co2_climbing_after_arrival_is_explained_within_the_window_only() -> None:
    def run(window: float) -> list[Anomaly]:
        room = Room(AnomalyDetector(explain_window_s=window, explained_by=("occupancy",)))
        room.quiet(0, 60)
        room.feed(_ev("occupancy", 1.0, 3600, None))
        for i in range(61, 90):  # CO2 climbs 8 ppm a minute from the arrival on
            ts = 60.0 * i
            room.feed(_ev("co2", 450 + 8 * (i - 60), ts, "ppm"))
            room.feed(_ev("occupancy", 1.0, ts, None))
        room.tick(90 * 60 + window + 1)
        return [a for a in room.raised if a.metric == "co2"]

    assert run(600) == []
    (late,) = run(60)  # a 1-minute window: the climb's z-score comes too late to be explained
    assert late.kind == "zscore"


def test_a_state_change_in_another_area_explains_nothing() -> None:
    room = Room(AnomalyDetector(explain_window_s=300, level_transitions={}))
    room.quiet(0, 60)
    room.feed(SensorEvent("hall", "occupancy", 0.0, 3500, "z/hall", None, "hall"))
    room.feed(SensorEvent("hall", "occupancy", 1.0, 3590, "z/hall", None, "hall"))
    room.feed(_ev("light", 450, 3600, "lx"))
    room.tick(4000)
    assert [(a.kind, a.metric) for a in room.raised] == [("zscore", "light")]


def test_a_metric_with_an_empty_rule_is_never_held() -> None:
    detector = AnomalyDetector(
        jumps={"co2": 300}, explain={"co2": {"explained_by": []}}, explain_window_s=300
    )
    room = Room(detector)
    room.feed(_ev("occupancy", 0.0, 0, None))
    room.feed(_ev("co2", 450, 0, "ppm"))
    room.feed(_ev("occupancy", 1.0, 60, None))
    room.feed(_ev("co2", 900, 60, "ppm"))
    assert [(a.kind, a.ts) for a in room.raised] == [("jump", 60)]


def test_a_per_metric_window_overrides_the_default() -> None:
    detector = AnomalyDetector(
        jumps={"co2": 300}, explain={"co2": {"window_s": 1800}}, explain_window_s=60
    )
    room = Room(detector)
    room.feed(_ev("occupancy", 0.0, 0, None))
    room.feed(_ev("occupancy", 1.0, 60, None))
    room.feed(_ev("co2", 450, 600, "ppm"))
    room.feed(_ev("co2", 900, 1200, "ppm"))  # 19 min after the arrival
    room.tick(1200 + 1801)
    assert room.raised == []
    (change,) = detector.explained_in(AREA)
    assert (change.kind, change.cause_metric) == ("jump", "occupancy")


def test_thresholds_are_never_explained_away() -> None:
    detector = AnomalyDetector(thresholds={"light": {"max": 300}}, explain_window_s=300)
    room = Room(detector)
    room.feed(_ev("occupancy", 1.0, 0, None))
    room.feed(_ev("light", 450, 0, "lx"))
    assert [(a.kind, a.phase) for a in room.raised] == [("threshold", "started")]
