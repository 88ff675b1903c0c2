"""Poison payloads, retained on a real Mosquitto, against the real CLI, twice.

Each poison once stopped all ingestion, and being retained it did so again at every
start. Now each is dead-lettered with its reason, both at the first start and after a
restart, and a good message after them is counted in ``events_total``. (A retained
question is ignored unread, so the deep question is sent live.)
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker, Probe

pytestmark = pytest.mark.slow


def _poisons(prefix: str, node: str) -> dict[str, tuple[bytes, str]]:
    """topic -> (retained payload, the dead letter's reason)."""
    return {
        f"{prefix}/z2m/big": (b'{"temperature": ' + b"1" * 310 + b"}", "number_too_long"),
        f"{prefix}/z2m/huge": (b'{"temperature": ' + b"1" * 5000 + b"}", "number_too_long"),
        f"{prefix}/z2m/deep": (b"[" * 1000 + b"]" * 1000, "too_deep"),
        f"{prefix}/z2m/surrogate": (b'{"\\ud800": 1}', "invalid_unicode"),
        f"{prefix}/tele/plug/STATE": (b'{"Wifi":{"RSSI":' + b"4" * 400 + b"}}", "number_too_long"),
        f"{prefix}/ha/sensor/x/temperature": (b"5" * 400, "number_too_long"),
        f"{prefix}/home/x/temperature": ("２１".encode(), "non_ascii_digits"),
    }


# A retained question is ignored unread (an answer must not repeat at every start), so the
# deep ask is sent live, once per start.
DEEP_ASK = b'{"q": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"


def _subscriptions(prefix: str) -> str:
    subs = [
        (f"{prefix}/z2m/#", "zigbee2mqtt"),
        (f"{prefix}/tele/#", "tasmota"),
        (f"{prefix}/ha/#", "statestream"),
        (f"{prefix}/home/#", "plain"),
    ]
    return "\n".join(
        f'[[sensors.subscriptions]]\ntopic = "{topic}"\nadapter = "{adapter}"\n'
        for topic, adapter in subs
    )


def _serve_once(
    config: Path, probe: Probe, node: str, prefix: str, expected: dict[str, str]
) -> None:
    """Start the agent, check every poison is dead-lettered and a good message counted."""
    agent = start_agent(config)
    try:
        probe.wait_for(f"edge-agent/{node}/availability", lambda p: p == b"online", timeout=120)
        probe.publish(f"edge-agent/{node}/ask", DEEP_ASK)
        letters: dict[str, str] = {}
        while set(letters) != set(expected):
            doc = json.loads(probe.wait_for(f"edge-agent/{node}/deadletter", timeout=30))
            letters[doc["topic"]] = doc["reason"]
        assert letters == expected
        probe.publish(f"{prefix}/z2m/good", json.dumps({"temperature": 21.5}))
        status = json.loads(
            probe.wait_for(
                f"edge-agent/{node}/status",
                lambda p: json.loads(p)["events_total"] >= 1,
                timeout=30,
            )
        )
        assert status["events_total"] == 1
        assert status["internal_errors_total"] == 0
        assert status["last_error"] is None
        assert agent.poll() is None, "the agent exited"
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0


def test_retained_poison_is_dead_lettered_at_every_start(
    broker: Broker, probe: Probe, tiny_model, tmp_path: Path
) -> None:
    prefix = f"poison-{uuid.uuid4().hex[:8]}"
    config, node = write_config(
        tmp_path,
        broker,
        tiny_model.int4_dir,
        extra=_subscriptions(prefix),
        interval_s=3600,
        status_interval_s=1.0,
    )
    poisons = _poisons(prefix, node)
    for topic, (raw, _) in poisons.items():
        probe.publish(topic, raw, retain=True)
    expected = {topic: reason for topic, (_, reason) in poisons.items()}
    expected[f"edge-agent/{node}/ask"] = "too_deep"
    probe.subscribe(f"edge-agent/{node}/#")
    try:
        _serve_once(config, probe, node, prefix, expected)
        _serve_once(config, probe, node, prefix, expected)  # the retained poison again
    finally:
        for topic in poisons:
            probe.publish(topic, b"", retain=True)
