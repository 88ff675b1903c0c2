"""Each parse limit has its own reason; payload times, late readings, caps and pruning."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge_agent.anomalies import AnomalyDetector
from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError
from edge_agent.facts import WindowStore
from edge_agent.ingest import Payload, SourceOptions, build_source
from edge_agent.ingest.limits import MAX_DEPTH, check_depth
from edge_agent.ingest.timing import TimePolicy, payload_time
from edge_agent.narrator import Narrator, NarratorConfig
from edge_agent.service import Agent, AgentConfig, Route
from edge_agent.transport.base import Message
from edge_agent.worker import InferenceWorker
from tests.test_service import TOPICS, MemoryTransport, ScriptedGenerator

NOW = 1_700_000_000.0


def reason(adapter: str, flt: str, topic: str, payload: bytes, **kw: Any) -> str:
    source = build_source(flt, adapter, None, SourceOptions(**kw))
    with pytest.raises(PayloadError) as err:
        source.read(topic, Payload(payload), NOW)
    return err.value.reason


# --- limits ---------------------------------------------------------------------------


def test_depth_is_checked_before_decoding_and_ignores_brackets_in_strings() -> None:
    deep = "[" * 30_000 + "]" * 30_000
    assert reason("zigbee2mqtt", "z/#", "z/x", deep.encode()) == "too_deep"
    check_depth('{"a": "' + "[" * 1000 + '"}')  # in a string: depth 1
    check_depth('{"a": "\\"' + "[" * 1000 + '"}')  # an escaped quote does not end it
    at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    check_depth(at_limit)
    with pytest.raises(PayloadError):
        check_depth("[" + at_limit + "]")


@pytest.mark.parametrize("digits", [21, 310, 4301, 20_000])
def test_long_integers_are_number_too_long_not_a_python_error(digits: int) -> None:
    raw = b'{"temperature": ' + b"7" * digits + b"}"
    assert reason("zigbee2mqtt", "z/#", "z/x", raw) == "number_too_long"
    assert reason("plain", "h/#", "h/x/t", b"7" * digits) == "number_too_long"


def test_a_uint64_is_still_a_number_but_out_of_range_as_a_reading() -> None:
    raw = b'{"temperature": 18446744073709551615}'
    assert reason("zigbee2mqtt", "z/#", "z/x", raw) == "out_of_range"
    assert reason("plain", "h/#", "h/x/t", b"1e300") == "out_of_range"
    assert reason("generic", "w/+", "w/x", b'{"t": -2e15}', fields={"t": "t"}) == "out_of_range"


@pytest.mark.parametrize("text", ["２１", "٢١", "۲۱.5", "२१"])
def test_non_ascii_digits_are_rejected_where_float_would_read_them(text: str) -> None:
    assert float(text) > 0  # what Python alone would do
    assert reason("plain", "h/#", "h/x/t", text.encode()) == "non_ascii_digits"
    assert reason("statestream", "ha/#", "ha/sensor/x/state", text.encode()) == "non_ascii_digits"


@pytest.mark.parametrize(
    "raw",
    [b'{"\\ud800": 1}', b'{"temperature": 1, "action": "\\udc00"}', b'{"a": ["\\ud83d"]}'],
)
def test_lone_surrogates_anywhere_are_invalid_unicode(raw: bytes) -> None:
    assert reason("zigbee2mqtt", "z/#", "z/x", raw) == "invalid_unicode"


def test_a_proper_surrogate_pair_is_fine() -> None:
    source = build_source("z/#", "zigbee2mqtt", None)
    [event] = source.parse("z/x", Payload(b'{"t\\ud83d\\ude00": 1}'), NOW)
    assert event.metric == "t😀"


@pytest.mark.parametrize("key", ["", "a\x00b", "tab\there", "x" * 200])
def test_bad_names_are_rejected(key: str) -> None:
    raw = json.dumps({key: 1}).encode()
    assert reason("zigbee2mqtt", "z/#", "z/x", raw) == "bad_name"


def test_statestream_null_text_and_objects_are_wrong_type_but_metadata_is_ignored() -> None:
    for raw in (b"null", b'"warm"', b'{"a": 1}', b"[1, 2]", b'"21"'):
        assert reason("statestream", "ha/#", "ha/light/desk/brightness", raw) == "wrong_type"
    source = build_source("ha/#", "statestream", None)
    for leaf in ("friendly_name", "unit_of_measurement", "last_changed", "icon"):
        parsed = source.read(f"ha/light/desk/{leaf}", Payload(b'"Desk"'), NOW)
        assert (parsed.events, parsed.ignored) == ([], "metadata")
    assert source.read("ha/sensor/x/state", Payload(b"unavailable"), NOW).ignored == "no_reading"


def test_tasmota_wrong_typed_fields_are_named_and_the_rest_ingested() -> None:
    source = build_source("tele/#", "tasmota", None)
    raw = (
        b'{"Time":"2023-11-14T22:13:20","AM2301":{"Temperature":"hot","Humidity":40,'
        b'"Id":"0123"},"Wifi":{"RSSI":"good"}}'
    )
    parsed = source.read("tele/x/SENSOR", Payload(raw), NOW)
    assert [e.metric for e in parsed.events] == ["am2301_humidity"]
    # 'Id' is a label even when it looks numeric... but numbers as text are named.
    assert [r.split(":")[0] for r in parsed.rejected] == ["AM2301.Temperature", "AM2301.Id"]
    state = source.read(
        "tele/x/STATE", Payload(b'{"POWER":1,"Wifi":{"RSSI":"x","Signal":-60}}'), NOW
    )
    assert [e.metric for e in state.events] == ["wifi_signal"]
    assert state.rejected == ("POWER: 1, not ON or OFF", "Wifi.RSSI: text, not a number")


# --- payload times and late readings ---------------------------------------------------


def test_payload_time_reads_iso_and_epoch_and_refuses_unset_clocks() -> None:
    assert payload_time("2023-11-14T22:13:20Z") == NOW
    assert payload_time("2023-11-14T23:13:20+01:00") == NOW
    assert payload_time(NOW * 1000) == NOW
    assert payload_time(NOW) == NOW
    naive = datetime.fromtimestamp(NOW).replace(tzinfo=None).isoformat()  # Tasmota: local
    assert payload_time(naive) == NOW
    assert payload_time("1970-01-01T00:00:05") is None  # never synced
    assert payload_time("yesterday") is None
    assert payload_time(True) is None


def test_zigbee2mqtt_and_tasmota_and_generic_use_their_payload_time() -> None:
    then = NOW - 120
    iso = datetime.fromtimestamp(then, UTC).isoformat()
    z2m = build_source("z/#", "zigbee2mqtt", None)
    [event] = z2m.parse(
        "z/x", Payload(json.dumps({"t": 1, "last_seen": then * 1000}).encode()), NOW
    )
    assert event.ts == then
    tas = build_source("tele/#", "tasmota", None)
    local = datetime.fromtimestamp(then).replace(tzinfo=None).isoformat()
    raw = json.dumps({"Time": local, "DS18B20": {"Temperature": 5}}).encode()
    assert tas.parse("tele/x/SENSOR", Payload(raw), NOW)[0].ts == then
    gen = build_source("w/+", "generic", None, SourceOptions(fields={"t": "v"}, time_path="at"))
    raw = json.dumps({"v": 3, "at": iso}).encode()
    assert gen.parse("w/x", Payload(raw), NOW)[0].ts == then


def _event(ts: float, value: float = 1.0, **kw: Any) -> SensorEvent:
    return SensorEvent("dev", "temperature", value, ts, "t", "°C", **kw)


def test_time_policy_marks_late_bounds_the_future_and_refuses_the_stale() -> None:
    policy = TimePolicy(late_after_s=30, max_skew_s=60, max_age_s=3600)
    live, recent, old = _event(NOW), _event(NOW - 10), _event(NOW - 300)
    out = policy.apply([live, recent, old], NOW)
    assert [e.late for e in out] == [False, False, True]
    assert out[2].ts == NOW - 300  # kept at its own time
    assert policy.apply([_event(NOW + 3600)], NOW)[0].ts == NOW  # clock ahead: receive time
    assert policy.apply([_event(NOW)], NOW, retained=True)[0].late
    with pytest.raises(PayloadError) as err:
        policy.apply([_event(NOW - 7200)], NOW)
    assert err.value.reason == "stale_timestamp"


def test_out_of_order_late_readings_are_filed_at_their_time() -> None:
    store = WindowStore(600)
    for ts, value in ((NOW - 60, 20.0), (NOW, 22.0)):
        store.add(_event(ts, value))
    store.add(_event(NOW - 30, 21.0, late=True))  # arrived last, taken in between
    store.add(_event(NOW - 90, 19.0, late=True))
    [fact] = store.facts(NOW)
    assert (fact.count, fact.last, fact.min, fact.max) == (4, 22.0, 19.0, 22.0)
    assert (fact.first_ts, fact.last_ts) == (NOW - 90, NOW)
    # The rate is between the two newest readings by time: 21 -> 22 over 30 s.
    assert fact.rate_per_min == pytest.approx(2.0)
    assert fact.slope_per_h == pytest.approx(3600 * 3 / 90, rel=0.01)


def test_late_readings_raise_no_jump_or_zscore_but_still_thresholds() -> None:
    store = WindowStore(600, baseline_s=3600)
    detector = AnomalyDetector(
        thresholds={"temperature": {"max": 30.0}}, jumps={"temperature": 3.0}, zscore_min_count=5
    )
    for i in range(10):
        event = _event(NOW - 100 + i, 20.0 + (i % 2) * 0.1)
        store.add(event)
        detector.check(event, store)
    late = _event(NOW - 500, 29.0, late=True)
    store.add(late)
    assert detector.check(late, store) == []
    hot = _event(NOW - 400, 35.0, late=True)
    store.add(hot)
    assert [a.kind for a in detector.check(hot, store)] == ["threshold"]


# --- caps and pruning -----------------------------------------------------------------


def test_series_and_device_caps_refuse_new_series_only() -> None:
    store = WindowStore(600, max_series=3, max_devices=2)
    assert store.add(SensorEvent("a", "t", 1, NOW, "x"))
    assert store.add(SensorEvent("a", "h", 1, NOW, "x"))
    assert store.add(SensorEvent("b", "t", 1, NOW, "x"))
    assert not store.add(SensorEvent("b", "h", 1, NOW, "x"))  # 4th series
    assert not store.add(SensorEvent("c", "t", 1, NOW, "x"))
    assert store.add(SensorEvent("a", "t", 2, NOW + 1, "x"))  # known series still flow
    assert (store.series_count, store.refused_total) == (3, 2)
    assert set(store.names) == {"a", "b"}

    devices = WindowStore(600, max_series=100, max_devices=1)
    assert devices.add(SensorEvent("a", "t", 1, NOW, "x"))
    assert devices.add(SensorEvent("a", "h", 1, NOW, "x"))
    assert not devices.add(SensorEvent("b", "t", 1, NOW, "x"))


def test_series_without_data_in_the_retention_are_pruned_and_free_the_cap() -> None:
    store = WindowStore(60, baseline_s=600, stale_min_gaps=3, max_series=2)
    store.add(SensorEvent("once", "t", 1, NOW, "x", area="hall"))
    for i in range(5):  # a sensor with a rhythm: kept for stale reports
        store.add(SensorEvent("steady", "t", 1, NOW + i * 10, "x", area="hall"))
    later = NOW + 700
    assert not store.add(SensorEvent("new", "t", 1, NOW + 100, "x"))  # both still current
    assert store.add(SensorEvent("new", "t", 1, later, "x"))  # 'once' pruned to make room
    assert store.pruned_total == 1
    assert "once" not in store.names
    assert [f.device for f in store.area_facts("hall", later)] == ["steady"]  # stale
    store.facts(NOW + 86_400 + 100)
    assert store.series_count == 0


def test_area_facts_cost_one_area() -> None:
    store = WindowStore(600)
    store.add(SensorEvent("k", "t", 1, NOW, "x", area="kitchen"))
    store.add(SensorEvent("g", "t", 2, NOW, "x", area="garage"))
    store.add(SensorEvent("n", "t", 3, NOW, "x"))
    assert [f.device for f in store.area_facts("kitchen", NOW)] == ["k"]
    assert list(store.facts_by_area(NOW)) == ["garage", "kitchen", None]
    store.add(SensorEvent("k", "t", 1, NOW + 1, "x", area="garage"))  # moved
    assert [f.device for f in store.area_facts("garage", NOW + 1)] == ["g", "k"]
    assert set(store.names) == {"k", "g", "n", "garage"}


# --- the agent ------------------------------------------------------------------------


def _agent(store: WindowStore | None = None, **handlers: Any) -> tuple[Agent, MemoryTransport]:
    transport = MemoryTransport()
    narrator = Narrator(InferenceWorker(ScriptedGenerator(), 4), NarratorConfig(8, 8, 5.0))
    config = AgentConfig(TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536)
    route = Route.build("zigbee2mqtt/#", "zigbee2mqtt", "home")
    agent = Agent(
        transport,
        narrator,
        (route,),
        config,
        store or WindowStore(600),
        AnomalyDetector(thresholds={}),
        lambda: NOW,
        handlers={f"h/{k}": v for k, v in handlers.items()},
    )
    return agent, transport


def test_any_exception_is_an_internal_error_dead_letter_logged_once_per_kind() -> None:
    def broken(message: Message) -> None:
        raise RecursionError("deep inside " + message.topic)

    def also_broken(message: Message) -> None:
        raise KeyError("\ud800")  # even a message with a lone surrogate

    agent, transport = _agent(broken=broken, worse=also_broken)
    with capture_logs() as logs:
        for _ in range(3):
            agent.handle(Message("h/broken", b"x"))
        agent.handle(Message("h/worse", b"x"))
        agent.handle(Message("zigbee2mqtt/ok", b'{"temperature": 21}'))
    letters = transport.on(TOPICS.deadletter)
    assert [letter["reason"] for letter in letters] == ["internal_error"] * 4
    assert letters[0]["detail"].startswith("RecursionError: deep inside h/broken")
    assert letters[3]["detail"].startswith("KeyError")
    assert agent.internal_errors_total == 4
    assert agent.intake_counters["internal_errors_total"] == 4
    assert agent.events_total == 1
    failed = [e for e in logs if e["event"] == "message_failed"]
    with_trace = [e for e in failed if "exc_info" in e]
    assert [e["error"] for e in with_trace] == ["RecursionError", "KeyError"]
    assert [e.get("count") for e in failed if "exc_info" not in e] == [2, 3]


def test_a_failing_store_is_an_internal_error_not_a_dead_intake() -> None:
    class Exploding(WindowStore):
        def add(self, event: SensorEvent) -> bool:
            if event.device == "bomb":
                raise OverflowError("boom")
            return super().add(event)

    agent, transport = _agent(Exploding(600))
    agent.handle(Message("zigbee2mqtt/bomb", b'{"temperature": 1}'))
    agent.handle(Message("zigbee2mqtt/fine", b'{"temperature": 1}'))
    assert [d["reason"] for d in transport.on(TOPICS.deadletter)] == ["internal_error"]
    assert agent.events_total == 1


def test_past_the_cap_a_message_is_dead_lettered_too_many_series_and_counted() -> None:
    agent, transport = _agent(WindowStore(600, max_series=2))
    agent.handle(Message("zigbee2mqtt/a", b'{"temperature": 1, "humidity": 2}'))
    agent.handle(Message("zigbee2mqtt/b", b'{"temperature": 1}'))
    agent.handle(Message("zigbee2mqtt/a", b'{"temperature": 2}'))
    assert [d["reason"] for d in transport.on(TOPICS.deadletter)] == ["too_many_series"]
    assert agent.events_total == 3
    assert agent.intake_counters["series_refused_total"] == 1


def test_agent_marks_retained_and_backlogged_readings_late() -> None:
    agent, _ = _agent()
    agent.handle(Message("zigbee2mqtt/r", b'{"temperature": 1}', retain=True))
    old = json.dumps({"temperature": 2, "last_seen": (NOW - 600) * 1000}).encode()
    agent.handle(Message("zigbee2mqtt/o", old))
    stale = json.dumps({"temperature": 2, "last_seen": (NOW - 7200) * 1000}).encode()
    agent.handle(Message("zigbee2mqtt/s", stale))
    facts = {f.device: f for f in agent._store.facts(NOW)}
    assert facts["o"].last_ts == NOW - 600
    assert set(facts) == {"r", "o"}
    assert agent.deadletters_total == 1


def test_a_dead_main_task_is_reported_with_its_reason() -> None:
    from edge_agent.app import _until_stop_or_death

    async def scenario() -> tuple[str | None, str | None]:
        async def dies() -> None:
            raise RuntimeError("intake is gone")

        async def lives() -> None:
            await asyncio.sleep(3600)

        stop = asyncio.Event()
        tasks = [asyncio.create_task(dies(), name="agent"), asyncio.create_task(lives())]
        died = await asyncio.wait_for(_until_stop_or_death(stop, tasks), 5)
        tasks[1].cancel()
        calm = [asyncio.create_task(lives(), name="status")]
        stop.set()
        stopped = await asyncio.wait_for(_until_stop_or_death(stop, calm), 5)
        calm[0].cancel()
        return died, stopped

    died, stopped = asyncio.run(scenario())
    assert died == "task agent ended: RuntimeError('intake is gone')"
    assert stopped is None
