"""Drafting through the whole service: real CLI, real Mosquitto, the tiny model at K=4.

The service's runtime drafts from the prompt and from its own recent outputs, and
verifies every drafted token in the same pass. Asked the same questions twice, it
answers the second round exactly as the first, its generations the same length, with
the first round's outputs in its history by then. (The random-weight model's texts
fail the grounding check, so the published answers are the fallback; that text
identity is shown on the runtime in ``test_runtime_draft.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.agent import start_agent, stop_agent, write_config
from tests.support.broker import Broker

pytestmark = pytest.mark.slow

SUBSCRIPTION = """
[[sensors.subscriptions]]
topic = "zigbee2mqtt/#"
adapter = "zigbee2mqtt"
device_areas = { "office_sensor" = "office", "front_door" = "hallway" }
"""

QUESTIONS = ("How warm is the office?", "Is the front door open?", "What is the humidity?")


def _events(log: Path, name: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            found.append(record)
    return found


def test_repeated_questions_are_answered_identically_and_drafted_from_history(
    broker: Broker, tiny_k4: Path, tmp_path: Path
) -> None:
    config, node = write_config(
        tmp_path,
        broker,
        tiny_k4,
        extra=SUBSCRIPTION,
        interval_s=3600,
        window_s=600,
        ask_max_new_tokens=24,
    )
    reply_to = f"drafting/{node}/reply"
    asker = broker.client()
    asker.subscribe(f"edge-agent/{node}/availability")
    asker.subscribe(reply_to)
    agent = start_agent(config)
    answers: list[str] = []
    try:
        asker.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)
        office = {"temperature": 21.5, "humidity": 48, "battery": 90}
        asker.publish("zigbee2mqtt/office_sensor", json.dumps(office))
        asker.publish("zigbee2mqtt/front_door", json.dumps({"contact": True, "battery": 94}))
        for n in range(2 * len(QUESTIONS)):  # one at a time: each reply before the next ask
            ask = {"id": str(n), "q": QUESTIONS[n % len(QUESTIONS)], "reply_to": reply_to}
            asker.publish(f"edge-agent/{node}/ask", json.dumps(ask))
            reply = json.loads(
                asker.wait_for(reply_to, lambda p, n=n: json.loads(p)["id"] == str(n), timeout=60)
            )
            assert "answer" in reply, reply
            answers.append(reply["answer"])
    finally:
        stop_agent(agent)
        asker.close()

    log = config.with_suffix(".log")
    assert [e["draft_tokens"] for e in _events(log, "model_ready")] == [3]
    assert answers[: len(QUESTIONS)] == answers[len(QUESTIONS) :]
    # The model's generations, in order: the warm-up, then one per question.
    runs = _events(log, "generation_finished")[-2 * len(QUESTIONS) :]
    first, second = runs[: len(QUESTIONS)], runs[len(QUESTIONS) :]
    shape = [(e["prompt_tokens"], e["new_tokens"], e["stop_reason"]) for e in first]
    assert shape == [(e["prompt_tokens"], e["new_tokens"], e["stop_reason"]) for e in second]
    assert sum(int(str(e["accepted_tokens"])) for e in runs) > 0
