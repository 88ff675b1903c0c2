"""Property: every hostile message ends in exactly one explicit outcome, and intake goes on.

For every adapter and the ask topic, hypothesis feeds the real :class:`Agent` hostile
payloads (huge integers, deep nesting, lone surrogates, non-ASCII digits, wrong types in
objects, random bytes). Each message must end in exactly one of: events (optionally with
one ``wrong_type_fields`` dead letter for dropped fields), one dead letter with a reason
other than ``internal_error``, or a documented ignore; and a good message right after it
must still be ingested. Set ``EDGE_AGENT_FUZZ_REPORT=<file>`` to write outcome counts.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.anomalies import AnomalyDetector
from edge_agent.facts import WindowStore
from edge_agent.ingest import SourceOptions
from edge_agent.narrator import Narrator, NarratorConfig
from edge_agent.service import Agent, AgentConfig, Route
from edge_agent.transport.base import Message
from edge_agent.worker import InferenceWorker
from tests.support.hostile import payload, topic_tail
from tests.test_service import TOPICS, MemoryTransport, ScriptedGenerator

NOW = 1_700_000_000.0
ASK = TOPICS.ask

ROUTES = (
    Route.build("zigbee2mqtt/#", "zigbee2mqtt", "home"),
    Route.build("homeassistant/#", "statestream", "home"),
    Route.build("tele/#", "tasmota", "home"),
    Route.build("stat/#", "tasmota", "home"),
    Route.build("esphome/#", "esphome", "home"),
    Route.build("home/#", "plain", None),
    Route.build(
        "weather/+",
        "generic",
        "garden",
        SourceOptions(
            fields={"t": "temperature", "h": "sensors[0].humidity", "w": "Wifi.RSSI"},
            time_path="ts",
        ),
    ),
)

TOPICS_BY_ADAPTER: dict[str, st.SearchStrategy[str]] = {
    "zigbee2mqtt": st.one_of(
        topic_tail.map(lambda t: f"zigbee2mqtt/{t}"),
        topic_tail.map(lambda t: f"zigbee2mqtt/{t}/availability"),
        st.sampled_from(["zigbee2mqtt/bridge/state", "zigbee2mqtt/lamp/set"]),
    ),
    "statestream": st.one_of(
        topic_tail.map(lambda t: f"homeassistant/sensor/{t}/state"),
        st.sampled_from(
            ["temperature", "friendly_name", "brightness", "last_changed", "unit_of_measurement"]
        ).map(lambda a: f"homeassistant/light/desk/{a}"),
        st.just("homeassistant/x"),
    ),
    "tasmota": st.one_of(
        st.tuples(topic_tail, st.sampled_from(["SENSOR", "STATE", "LWT", "INFO1"])).map(
            lambda p: f"tele/{p[0]}/{p[1]}"
        ),
        st.sampled_from(["POWER", "POWER1", "RESULT", "STATUS"]).map(lambda leaf: f"stat/x/{leaf}"),
    ),
    "esphome": st.one_of(
        st.tuples(
            st.sampled_from(["sensor", "binary_sensor", "text_sensor", "switch", "number"]),
            topic_tail,
        ).map(lambda p: f"esphome/node/{p[0]}/{p[1]}/state"),
        st.sampled_from(["esphome/node/status", "esphome/node/debug", "esphome/state"]),
    ),
    "plain": topic_tail.map(lambda t: f"home/{t}/temperature"),
    "generic": topic_tail.map(lambda t: f"weather/{t}"),
    "ask": st.just(ASK),
}

GOOD = {
    "zigbee2mqtt": ("zigbee2mqtt/good", b'{"temperature": 21}'),
    "statestream": ("homeassistant/sensor/good/state", b"21"),
    "tasmota": ("tele/good/SENSOR", b'{"AM2301": {"Temperature": 21}}'),
    "esphome": ("esphome/good/sensor/t/state", b"21"),
    "plain": ("home/good/temperature", b"21"),
    "generic": ("weather/good", b'{"temperature": 21}'),
    "ask": ("zigbee2mqtt/good", b'{"temperature": 21}'),
}

OUTCOMES: Counter[str] = Counter()
TOO_LONG = "number_too_long"


def _agent() -> tuple[Agent, MemoryTransport]:
    transport = MemoryTransport()
    narrator = Narrator(InferenceWorker(ScriptedGenerator(), 4), NarratorConfig(8, 8, 5.0))
    config = AgentConfig(TOPICS, window_s=600, interval_s=3600, max_payload_bytes=65536)
    # No z-score: an anomaly would spawn a summary, which is not what is fuzzed here.
    detector = AnomalyDetector(thresholds={}, zscore_min_count=10**9)
    store = WindowStore(600, max_series=100_000, max_devices=100_000)
    agent = Agent(transport, narrator, ROUTES, config, store, detector, lambda: NOW)
    return agent, transport


def _handle(agent: Agent, message: Message) -> None:
    async def once() -> None:
        agent.handle(message)  # an accepted ask spawns its answer: a loop must run

    asyncio.run(once())


def _outcome(agent: Agent, transport: MemoryTransport, message: Message) -> str:
    """Handle one message; return its one outcome, failing on anything else."""
    counters = (agent.events_total, agent.ignored_total, agent.asks_total)
    published = len(transport.published)
    _handle(agent, message)
    events = agent.events_total - counters[0]
    ignored = agent.ignored_total - counters[1]
    asked = agent.asks_total - counters[2]
    fresh = transport.published[published:]
    letters = [json.loads(p)["reason"] for t, p, _ in fresh if t == TOPICS.deadletter]
    assert "internal_error" not in letters, letters
    assert agent.internal_errors_total == 0
    if events:
        assert not ignored
        assert not asked
        assert letters in ([], ["wrong_type_fields"]), letters
        return "events+wrong_type_fields" if letters else "events"
    if letters:
        assert len(letters) == 1, letters
        assert not ignored
        assert not asked
        return f"deadletter:{letters[0]}"
    if asked:
        assert not ignored
        return "ask_accepted"
    assert ignored == 1, f"{message!r} was silently lost"
    return "ignored"


def _check(adapter: str, topic: str, raw: bytes, agent: Agent, transport: MemoryTransport) -> None:
    outcome = _outcome(agent, transport, Message(topic, raw, qos=1))
    OUTCOMES[f"{adapter} {outcome}"] += 1
    good_topic, good = GOOD[adapter]
    before = agent.events_total
    _handle(agent, Message(good_topic, good, qos=1))
    assert agent.events_total == before + 1, "a good message after a hostile one was lost"


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    path = os.environ.get("EDGE_AGENT_FUZZ_REPORT")
    if path:
        with open(path, "w") as out:
            json.dump(dict(sorted(OUTCOMES.items())), out, indent=1)


FUZZ = settings(
    max_examples=int(os.environ.get("EDGE_AGENT_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("adapter", sorted(TOPICS_BY_ADAPTER))
def test_every_hostile_message_has_one_explicit_outcome(adapter: str) -> None:
    agent, transport = _agent()

    @FUZZ
    @given(topic=TOPICS_BY_ADAPTER[adapter], raw=payload)
    def run(topic: str, raw: bytes) -> None:
        _check(adapter, topic, raw, agent, transport)

    run()


@pytest.mark.parametrize(
    ("adapter", "topic", "raw", "expected"),
    [
        ("zigbee2mqtt", "zigbee2mqtt/x", b'{"temperature": ' + b"1" * 310 + b"}", TOO_LONG),
        ("zigbee2mqtt", "zigbee2mqtt/x", b'{"temperature": ' + b"1" * 5000 + b"}", TOO_LONG),
        ("zigbee2mqtt", "zigbee2mqtt/x", b"[" * 1000 + b"]" * 1000, "too_deep"),
        ("zigbee2mqtt", "zigbee2mqtt/x", b'{"\\ud800": 1}', "invalid_unicode"),
        ("zigbee2mqtt", "zigbee2mqtt/x", b'{"temperature": "\\ud800"}', "invalid_unicode"),
        ("tasmota", "tele/x/STATE", b'{"Wifi":{"RSSI":' + b"4" * 400 + b"}}", "number_too_long"),
        ("statestream", "homeassistant/sensor/x/temperature", b"5" * 400, "number_too_long"),
        ("statestream", "homeassistant/sensor/x/temperature", b"null", "wrong_type"),
        ("statestream", "homeassistant/sensor/x/temperature", b'"warm"', "wrong_type"),
        ("statestream", "homeassistant/sensor/x/temperature", b'{"a": 1}', "wrong_type"),
        ("plain", "home/x/temperature", "２１".encode(), "non_ascii_digits"),
        ("plain", "home/x/temperature", "٢١".encode(), "non_ascii_digits"),
        ("esphome", "esphome/n/sensor/t/state", "２１".encode(), "non_ascii_digits"),
        ("zigbee2mqtt", "zigbee2mqtt/x", b'{"temperature": 1e300}', "out_of_range"),
        ("ask", ASK, b'{"q": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "too_deep"),
        ("ask", ASK, b'{"q": "\\ud800?"}', "invalid_unicode"),
    ],
)
def test_the_known_poison_payloads_get_their_reason(
    adapter: str, topic: str, raw: bytes, expected: str
) -> None:
    agent, transport = _agent()
    assert _outcome(agent, transport, Message(topic, raw, qos=1)) == f"deadletter:{expected}"
    good_topic, good = GOOD[adapter]
    _handle(agent, Message(good_topic, good))
    assert agent.events_total == 1


def test_lone_surrogate_keys_never_become_names_of_facts() -> None:
    agent, _ = _agent()
    for _ in range(35):
        _handle(agent, Message("zigbee2mqtt/x", b'{"\\ud800": 20}'))
    _handle(agent, Message("zigbee2mqtt/x", b'{"\\ud800": 1000}'))
    _handle(agent, Message("zigbee2mqtt/x", b'{"temperature": 20}'))
    assert agent.events_total == 1
    assert [f.fact_id for f in agent._store.facts(NOW)] == ["x.temperature"]


def _with_values(values: dict[str, Any]) -> bytes:
    return json.dumps(values, ensure_ascii=False).encode()


def test_wrong_typed_fields_are_named_once_and_the_valid_ones_ingested() -> None:
    agent, transport = _agent()
    raw = _with_values(
        {"temperature": "hot", "humidity": 40, "battery": [1], "co2": None, "action": "single"}
    )
    assert _outcome(agent, transport, Message("zigbee2mqtt/x", raw)) == "events+wrong_type_fields"
    [letter] = transport.on(TOPICS.deadletter)
    assert letter["reason"] == "wrong_type_fields"
    # Each dropped field is named; descriptive text (action) is not a wrong type.
    assert [part.split(":")[0] for part in letter["detail"].split("; ")] == [
        "temperature",
        "battery",
        "co2",
    ]
    assert [f.fact_id for f in agent._store.facts(NOW)] == ["x.humidity"]
