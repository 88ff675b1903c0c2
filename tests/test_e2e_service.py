"""The service end to end: asks, streaming, status, broker restarts, crashes, real data.

Every test runs the real CLI against a real Mosquitto with the real tiny int4 model.
"""

from __future__ import annotations

import csv
import json
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent import __version__
from edge_agent.demo.broker import LocalMosquitto
from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker, Probe

pytestmark = pytest.mark.slow

UCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci-occupancy" / "datatraining.txt"


def _facts(payload: bytes) -> dict[str, dict[str, object]]:
    return {f["id"]: f for f in json.loads(payload)["facts"]}


def _online(probe: Probe, node: str) -> None:
    probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)


def test_ask_over_mqtt5_echoes_correlation_data(broker: Broker, tiny_model, tmp_path: Path) -> None:
    config, node = write_config(tmp_path, broker, tiny_model.int4_dir, interval_s=3600)
    asker = broker.client(v5=True)
    asker.subscribe(f"edge-agent/{node}/#")
    asker.subscribe("replies/me")
    agent = start_agent(config)
    try:
        _online(asker, node)
        asker.publish("zigbee2mqtt/hall", json.dumps({"temperature": 19.5}))
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "replies/me"
        props.CorrelationData = b"req-42"
        props.MessageExpiryInterval = 120
        asker.publish(f"edge-agent/{node}/ask", "How warm is the hall?", properties=props)
        reply = asker.wait_message("replies/me", timeout=60)
        assert reply.properties.CorrelationData == b"req-42"
        doc = json.loads(reply.payload)
        assert doc["q"] == "How warm is the hall?"
        assert doc["facts"] == ["hall.temperature"]
        assert doc["answer"]
        assert doc["schema_version"] == 1
    finally:
        agent.kill()
        agent.wait(10)
        asker.close()


def test_ask_over_mqtt311_echoes_the_json_id(
    broker: Broker, probe: Probe, tiny_model, tmp_path: Path
) -> None:
    config, node = write_config(tmp_path, broker, tiny_model.int4_dir, interval_s=3600)
    probe.subscribe(f"edge-agent/{node}/#")
    probe.subscribe("ha/answers")
    agent = start_agent(config)
    try:
        _online(probe, node)
        probe.publish("zigbee2mqtt/hall", json.dumps({"humidity": 51}))
        question = {"id": "abc-1", "q": "Is the hall humid?", "reply_to": "ha/answers"}
        probe.publish(f"edge-agent/{node}/ask", json.dumps(question))
        doc = json.loads(probe.wait_for("ha/answers", timeout=60))
        assert doc["id"] == "abc-1"
        assert doc["facts"] == ["hall.humidity"]
        # Without reply_to, the answer goes to our own answer topic.
        probe.publish(f"edge-agent/{node}/ask", json.dumps({"id": 7, "q": "And now?"}))
        doc = json.loads(probe.wait_for(f"edge-agent/{node}/answer", timeout=60))
        assert doc["id"] == "7"
        # A malformed question is dead-lettered with a reason, not answered.
        probe.publish(f"edge-agent/{node}/ask", json.dumps({"question": "wrong key"}))
        letter = json.loads(probe.wait_for(f"edge-agent/{node}/deadletter", timeout=30))
        assert letter["reason"] == "bad_question"
    finally:
        agent.kill()
        agent.wait(10)


def test_summary_streams_and_status_is_retained(
    broker: Broker, probe: Probe, tiny_model, tmp_path: Path
) -> None:
    config, node = write_config(
        tmp_path,
        broker,
        tiny_model.int4_dir,
        interval_s=1.0,
        max_new_tokens=24,
        status_interval_s=1.0,
    )
    probe.subscribe(f"edge-agent/{node}/#")
    agent = start_agent(config)
    try:
        _online(probe, node)
        status = json.loads(probe.wait_for(f"edge-agent/{node}/status", timeout=30))
        assert status["version"] == __version__
        assert status["model"].startswith("gemma2:")
        probe.publish("zigbee2mqtt/office", json.dumps({"co2": 612}))
        summary = json.loads(
            probe.wait_for(
                f"edge-agent/{node}/summary",
                lambda p: bool(json.loads(p)["facts"]),
                timeout=60,
            )
        )
        # The stream is published before its summary, so it has arrived by now.
        deltas = [p.decode() for p in probe.payloads(f"edge-agent/{node}/summary/stream")]
        assert deltas, "no token was streamed"
        if not summary["fallback"]:
            assert summary["text"] in "".join(deltas)
        later = json.loads(
            probe.wait_for(
                f"edge-agent/{node}/status", lambda p: json.loads(p)["events_total"] >= 1
            )
        )
        assert later["uptime_s"] > 0
        assert later["decode_tok_s"] is None or later["decode_tok_s"] > 0
    finally:
        agent.kill()
        agent.wait(10)


def test_broker_restart_loses_nothing(tiny_model, tmp_path: Path) -> None:
    """Stop Mosquitto mid-stream (persistence on) and start it again on the same port."""
    workdir = tmp_path / "own-broker"
    workdir.mkdir()
    own = LocalMosquitto(workdir)
    own.start()
    config, node = write_config(
        tmp_path,
        own,
        tiny_model.int4_dir,
        interval_s=1.0,
        window_s=3600,
        max_new_tokens=4,
        mqtt_extra="reconnect_min_s = 3.0\nreconnect_max_s = 4.0",
    )
    agent = start_agent(config)
    probe = Probe(own.host, own.port)
    try:
        probe.subscribe(f"edge-agent/{node}/#")
        _online(probe, node)
        probe.publish("zigbee2mqtt/cellar", json.dumps({"temperature": 12.0}))
        probe.wait_for(f"edge-agent/{node}/summary", lambda p: "cellar.temperature" in _facts(p))
        probe.close()
        own.stop()
        outage_start = time.time()
        time.sleep(2.5)  # the agent keeps summarising into its outbox meanwhile
        outage_end = time.time()
        own.start()
        # Published while the agent is still backing off: queued in its persistent session.
        sender = Probe(own.host, own.port)
        sender.publish("zigbee2mqtt/cellar", json.dumps({"temperature": 13.0}))
        sender.publish("zigbee2mqtt/cellar", json.dumps({"temperature": 14.0}))
        sender.subscribe(f"edge-agent/{node}/#")
        _online(sender, node)
        # Everything published while disconnected was processed: 3 readings in the window.
        sender.wait_for(
            f"edge-agent/{node}/summary",
            lambda p: _facts(p).get("cellar.temperature", {}).get("count") == 3,
            timeout=60,
        )
        # Summaries made during the outage were kept in the outbox and sent afterwards.
        windows = [
            json.loads(p)["window"]["end"] for p in sender.payloads(f"edge-agent/{node}/summary")
        ]
        assert any(outage_start <= end <= outage_end for end in windows), windows
        sender.close()
    finally:
        agent.kill()
        agent.wait(10)
        own.stop()


def test_sigkill_and_restart_loses_no_qos1_event(
    broker: Broker, probe: Probe, tiny_model, tmp_path: Path
) -> None:
    config, node = write_config(
        tmp_path, broker, tiny_model.int4_dir, interval_s=1.0, window_s=3600, max_new_tokens=4
    )
    probe.subscribe(f"edge-agent/{node}/#")
    agent = start_agent(config)
    try:
        _online(probe, node)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"offline")
        for value in range(20):  # published while the agent is dead
            probe.publish("zigbee2mqtt/attic", json.dumps({"temperature": float(value)}))
        agent = start_agent(config)
        _online(probe, node)
        summary = probe.wait_for(
            f"edge-agent/{node}/summary",
            lambda p: _facts(p).get("attic.temperature", {}).get("count") == 20,
            timeout=60,
        )
        fact = _facts(summary)["attic.temperature"]
        assert (fact["min"], fact["max"]) == (0.0, 19.0)
    finally:
        agent.kill()
        agent.wait(10)


@pytest.mark.skipif(
    not UCI.exists(), reason="../shared/data (UCI occupancy) is absent in this clone"
)
def test_uci_occupancy_replay_shows_arrivals(
    broker: Broker, probe: Probe, tiny_model, tmp_path: Path
) -> None:
    """Replay real office data (UCI 357, CC BY 4.0) as zigbee2mqtt JSON, fast."""
    config, node = write_config(
        tmp_path, broker, tiny_model.int4_dir, interval_s=1.0, window_s=3600, max_new_tokens=8
    )
    probe.subscribe(f"edge-agent/{node}/#")
    # The header names 7 columns but each row starts with a quoted row id: read by position.
    names = ("id", "date", "Temperature", "Humidity", "Light", "CO2", "HumidityRatio", "Occupancy")
    with UCI.open() as f:
        rows = [dict(zip(names, row, strict=True)) for row in list(csv.reader(f))[1:]]
    # Around the first arrival of the morning of 2015-02-05.
    start = next(i for i, r in enumerate(rows) if r["date"].startswith("2015-02-05 07:00"))
    chunk = rows[start : start + 180]
    assert {r["Occupancy"] for r in chunk} == {"0", "1"}
    agent = start_agent(config)
    try:
        _online(probe, node)
        for row in chunk:
            doc = {
                "temperature": float(row["Temperature"]),
                "humidity": float(row["Humidity"]),
                "illuminance": float(row["Light"]),
                "co2": float(row["CO2"]),
                "occupancy": row["Occupancy"] == "1",
            }
            probe.publish("zigbee2mqtt/office/multisensor", json.dumps(doc))
        summary = probe.wait_for(
            f"edge-agent/{node}/summary",
            lambda p: _facts(p).get("office/multisensor.co2", {}).get("count") == len(chunk),
            timeout=90,
        )
        facts = _facts(summary)
        occupancy = facts["office/multisensor.occupancy"]
        assert occupancy["changes"], "the arrival is not among the facts"
        assert occupancy["changes"][0]["value"] == 1
        assert facts["office/multisensor.illuminance"]["max"] == max(
            float(r["Light"]) for r in chunk
        )
        first_in = datetime.fromisoformat(next(r["date"] for r in chunk if r["Occupancy"] == "1"))
        assert first_in.hour >= 7
    finally:
        agent.kill()
        agent.wait(10)
