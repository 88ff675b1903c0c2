"""Rate limits, "alert active" states, and the agent publishing the alert lifecycle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge_agent.alerts import Alerts
from edge_agent.alertstate import AlertState, AlertStateFile
from edge_agent.anomalies import AnomalyDetector
from edge_agent.app import build_alerts
from edge_agent.domain import Anomaly, SensorEvent, Topics
from edge_agent.facts import WindowStore
from edge_agent.narrator import Narrator, NarratorConfig
from edge_agent.ratelimit import NotificationLimiter, RateLimits
from edge_agent.service import Agent, AgentConfig, Route
from edge_agent.settings import Settings
from edge_agent.status import StatusReporter
from edge_agent.transport.base import Message
from edge_agent.worker import InferenceWorker
from tests.test_service import TOPICS, MemoryTransport, ScriptedGenerator


def _one_off(ts: float, metric: str = "light", area: str | None = "office") -> Anomaly:
    return Anomaly("zscore", "desk", metric, 1.0, ts, "unusual", area=area, z=5.0)


def _lifecycle(phase: str, ts: float, started_at: float, metric: str = "co2") -> Anomaly:
    return Anomaly(
        "threshold",
        "desk",
        metric,
        1100.0,
        ts,
        phase,
        area="office",
        threshold=1000.0,
        phase=phase,  # type: ignore[arg-type]
        started_at=started_at,
        peak=1100.0,
    )


def test_per_metric_limit_holds_over_any_rolling_period() -> None:
    limiter = NotificationLimiter(RateLimits(period_s=3600, per_metric=2, per_area=10, total=10))
    admitted = [limiter.admit(_one_off(t)) for t in (0, 600, 1200, 3599, 3601, 4300)]
    assert admitted == [True, True, False, False, True, True]
    assert limiter.suppressed_total == 2
    assert limiter.suppressed_by_kind == {"zscore": 2}


def test_area_and_total_limits_cover_every_metric() -> None:
    limiter = NotificationLimiter(RateLimits(per_metric=5, per_area=3, total=4))
    office = [limiter.admit(_one_off(t, metric)) for t, metric in enumerate("abcd")]
    assert office == [True, True, True, False]
    hall = [limiter.admit(_one_off(10 + t, area="hall")) for t in range(2)]
    assert hall == [True, False]  # the whole agent's 4 are used up


def test_overrides_per_metric_and_per_area() -> None:
    limits = RateLimits(per_metric=1, per_area=1, total=50, metrics={"smoke": 3}, areas={"lab": 9})
    limiter = NotificationLimiter(limits)
    assert [limiter.admit(_one_off(t, "smoke", "lab")) for t in range(4)] == [1, 1, 1, 0]
    assert [limiter.admit(_one_off(t, "co2")) for t in range(2)] == [1, 0]


def test_a_suppressed_start_silences_its_resolution_and_a_reminder_announces_it() -> None:
    limiter = NotificationLimiter(RateLimits(per_metric=1, per_area=9, total=9))
    assert limiter.decide(_one_off(0, "co2")) == "notify"
    assert limiter.decide(_one_off(1, "co2")) == "drop"  # a one-off over the limit: gone
    # A start over the limit is published without a notification, and so is its end.
    assert limiter.decide(_lifecycle("started", 10, 10)) == "quiet"
    assert limiter.silenced == {"desk.co2.10"}
    assert limiter.decide(_lifecycle("resolved", 20, 10)) == "quiet"
    assert limiter.silenced == frozenset()
    # Another one: its start is suppressed, its reminder an hour later gets through,
    # so its resolution must too.
    assert not limiter.admit(_lifecycle("started", 30, 30))
    assert limiter.admit(_lifecycle("reminder", 3700, 30))
    assert limiter.admit(_lifecycle("resolved", 3800, 30))
    assert limiter.suppressed_by_kind == {"zscore": 1, "started": 2, "resolved": 1}


def _agent(
    tmp_path: Path, limits: RateLimits, clock: list[float]
) -> tuple[Agent, MemoryTransport, InferenceWorker, Alerts]:
    transport = MemoryTransport()
    worker = InferenceWorker(ScriptedGenerator(*["CO2 is high."] * 5), max_backlog=4)
    narrator = Narrator(worker, NarratorConfig(32, 32, 10.0))
    route = Route.build("zigbee2mqtt/#", "zigbee2mqtt", "office")
    config = AgentConfig(
        TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536, anomaly_min_interval_s=0
    )
    detector = AnomalyDetector(thresholds={"co2": {"max": 1000}})
    alerts = Alerts(
        detector.excursions,
        NotificationLimiter(limits),
        topics=Topics.under("t"),
        state_file=AlertStateFile(tmp_path / "alerts.json"),
        areas=("office", "hall"),
    )
    agent = Agent(
        transport,
        narrator,
        (route,),
        config,
        WindowStore(600),
        detector,
        lambda: clock[0],
        alerts=alerts,
    )
    return agent, transport, worker, alerts


def test_the_agent_publishes_the_lifecycle_alert_states_and_counts_suppressed(
    tmp_path: Path,
) -> None:
    clock = [1000.0]
    agent, transport, worker, alerts = _agent(
        tmp_path, RateLimits(per_metric=1, per_area=5, total=5), clock
    )

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        for value in (800, 1100, 1300, 990, 900, 1200, 800):
            clock[0] += 60
            agent.handle(Message("zigbee2mqtt/desk", json.dumps({"co2": value}).encode()))
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 10))
    events = transport.on("t/anomaly")
    # The first excursion: one start, one end (990 is within the 5 % band). The second
    # came within the hour: its start and end are still published, but marked so that
    # nobody is notified, and counted as suppressed.
    assert [(e["event_type"], e["value"], e["notify"]) for e in events] == [
        ("started", 1100, True),
        ("resolved", 900, True),
        ("started", 1200, False),
        ("resolved", 800, False),
    ]
    assert (events[1]["duration_s"], events[1]["peak"]) == (180, 1300)
    states = [json.loads(p)["active"] for t, p, _ in transport.published if t == "t/alert/office"]
    assert states == [True, False, True, False]  # the binary sensor follows every excursion
    assert all(kw.get("retain") for t, _, kw in transport.published if t.startswith("t/alert"))
    assert agent.alert_counters == {
        "notifications_total": 1,
        "notifications_suppressed_total": 2,  # the second start and its end
        "excursions_open": 0,
    }
    assert len(transport.on("t/summary")) == 1  # a summary for the start only
    saved = json.loads((tmp_path / "alerts.json").read_text())
    assert saved["excursions"] == []
    assert alerts.states()[0][0] == "t/alert"
    assert [t for t, _ in alerts.states()] == ["t/alert", "t/alert/office", "t/alert/hall"]


def test_status_shows_the_alert_counters(tmp_path: Path) -> None:
    clock = [0.0]
    agent, transport, _worker, _alerts = _agent(tmp_path, RateLimits(), clock)
    status = StatusReporter(
        transport.publish,
        "t/status",
        30.0,
        model="m",
        agent=agent,
        queue_depth=lambda: 0,
        outbox_size=lambda: 0,
        backlog_counters=dict,
        alert_counters=lambda: agent.alert_counters,
    )
    status.publish_now()
    (doc,) = transport.on("t/status")
    assert doc["notifications_suppressed_total"] == 0
    assert doc["excursions_open"] == 0


def test_the_app_restores_open_excursions_and_silenced_ones_from_the_state_file(
    tmp_path: Path,
) -> None:
    settings = Settings(
        anomalies={"thresholds": {"co2": {"max": 1000}}},
        alerts={"state_path": str(tmp_path / "alerts.json")},
        sensors={"subscriptions": [{"topic": "z/#", "area": "office"}]},
    )
    before = AnomalyDetector(**settings.anomalies.model_dump())
    store = WindowStore(600)
    event = SensorEvent("desk", "co2", 1200.0, 100.0, "z/desk", "ppm", "office")
    store.add(event)
    (started,) = before.check(event, store)
    gone = "old.co2.5"  # an excursion that is no longer open: its silence is forgotten
    AlertStateFile(tmp_path / "alerts.json").save(
        AlertState(before.excursions.snapshot(), (str(started.excursion_id), gone))
    )
    detector = AnomalyDetector(**settings.anomalies.model_dump())
    alerts = build_alerts(settings, detector, now=200.0)
    assert [e.started_at for e in detector.open_in("office")] == [100.0]
    states = dict(alerts.states())
    assert json.loads(states["edge-agent/edge-agent/alert/office"])["active"] is True
    assert json.loads(states["edge-agent/edge-agent/alert"])["active"] is True
    # Its start was never notified, so neither is its end.
    event = SensorEvent("desk", "co2", 900.0, 300.0, "z/desk", "ppm", "office")
    store.add(event)
    (resolved,) = detector.check(event, store)
    kept, _states = alerts.on_anomaly(resolved)
    assert kept is not None
    assert kept.notify is False
    assert resolved.started_at == 100.0
