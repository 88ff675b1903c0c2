"""An ask flood against the real agent: every ask gets exactly one reply."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.export.tiny import TinyModel
from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker

pytestmark = pytest.mark.slow

ASKS = 200


def test_200_asks_in_2_seconds_each_get_exactly_one_reply(
    broker: Broker, tiny_model: TinyModel, tmp_path: Path
) -> None:
    config, node = write_config(
        tmp_path, broker, tiny_model.int4_dir, interval_s=3600, window_s=600, max_backlog=4
    )
    reply_to = f"flood/{node}/reply"
    asker = broker.client(v5=True)
    asker.subscribe(f"edge-agent/{node}/availability")
    asker.subscribe(reply_to)
    agent = start_agent(config, env={"EDGE_AGENT_LOG__LEVEL": "info"})
    try:
        asker.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)
        started = time.monotonic()
        for n in range(ASKS):
            if n % 2:  # 3.1.1 style: id and reply_to in the JSON
                payload = json.dumps({"id": str(n), "q": "how warm is it?", "reply_to": reply_to})
                asker.publish(f"edge-agent/{node}/ask", payload)
            else:  # MQTT 5 style: ResponseTopic and CorrelationData
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = reply_to
                props.CorrelationData = f"c{n}".encode()
                payload = json.dumps({"id": str(n), "q": "is the door open?"})
                asker.publish(f"edge-agent/{node}/ask", payload, properties=props)
            time.sleep(max(0.0, started + (n + 1) * 2.0 / ASKS - time.monotonic()))

        def replies() -> list[paho.MQTTMessage]:
            return [m for m in list(asker.seen) if m.topic == reply_to]

        deadline = time.monotonic() + 180
        while len(replies()) < ASKS and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # anything still coming would be a second reply
        got = replies()
    finally:
        agent.terminate()
        agent.wait(30)
        asker.close()

    docs = [json.loads(m.payload) for m in got]
    per_id = Counter(d["id"] for d in docs)
    assert set(per_id) == {str(n) for n in range(ASKS)}, sorted(
        set(map(str, range(ASKS))) - set(per_id)
    )
    assert [i for i, c in per_id.items() if c > 1] == []
    kinds = Counter("answer" if "answer" in d else d["error"] for d in docs)
    assert set(kinds) <= {"answer", "busy", "expired"}, kinds
    assert kinds["answer"] >= 1
    for message, doc in zip(got, docs, strict=True):
        assert doc["schema_version"] == 1
        if int(doc["id"]) % 2 == 0:  # the MQTT 5 asker gets its correlation data back
            assert message.properties.CorrelationData == f"c{doc['id']}".encode()
    print(f"{ASKS} asks: {dict(kinds)}")
