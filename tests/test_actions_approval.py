"""Approvals name their proposal; reply topics never reach our inputs; auto needs a reason.

Pure logic with the real engine, policy and audit log (SQLite in a temp dir); only the
publish function records instead of sending, and decisions are fed as model text.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import pytest

from edge_agent.actions.approval import Refusal, parse_approval
from edge_agent.actions.audit import AuditLog
from edge_agent.actions.constrain import JsonConstraint
from edge_agent.actions.engine import ActionsEngine, EngineConfig
from edge_agent.actions.policy import Policy, condition_holds
from edge_agent.actions.prompt import proposal_prompt
from edge_agent.actions.reply_guard import ReplyRules, forbidden_reply
from edge_agent.domain import MetricFacts, Window
from edge_agent.settings import ActionSpec, ActionsSettings, Condition
from edge_agent.transport.base import Message
from tests.test_actions_mqtt import actions_cli

BASE = "edge-agent/pi"
EVENT, PENDING = f"{BASE}/action/event", f"{BASE}/action/pending"
APPROVE, REJECT = f"{BASE}/action/approve", f"{BASE}/action/reject"
LOCK = {
    "id": "unlock_door",
    "description": "Unlock the front door",
    "topic": "zigbee2mqtt/{device}/set",
    "payload": '{"state": "UNLOCK"}',
    "devices": ["front door lock"],
    "risk": "high",
    "mode": "confirm",
    "cooldown_s": 0,
}
FAN = {
    "id": "fan",
    "description": "Switch the office fan",
    "topic": "cmnd/{device}/POWER",
    "payload": "{state}",
    "devices": ["office_fan"],
    "risk": "low",
    "mode": "auto",
    "cooldown_s": 0,
    "max_per_hour": 100,
    "when": {"metric": "co2", "above": 1000},
    "params": {"state": {"type": "enum", "values": ["ON", "OFF"]}},
}
FAN_ON = '{"action": "fan", "device": "office_fan", "params": {"state": "ON"}, "reason": "co2"}'
UNLOCK = '{"action": "unlock_door", "device": "front door lock", "params": {}, "reason": "x"}'


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Sent:
    """Every publish, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes, bool]] = []

    def __call__(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.items.append((topic, data, retain))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.items if t == topic]

    def commands(self) -> list[tuple[str, bytes]]:
        return [(t, p) for t, p, _ in self.items if not t.startswith(BASE)]


def co2(value: float, device: str = "office") -> MetricFacts:
    now = time.time()
    return MetricFacts(device, "co2", 3, value, value, value, value, now, now, "ppm")


def facts(value: float = 1500) -> list[MetricFacts]:
    now = time.time()
    return [
        co2(value),
        MetricFacts("front door lock", "state", 1, 0, 0, 0, 0, now, now),
        MetricFacts("office_fan", "power", 1, 0, 0, 0, 0, now, now),
    ]


def make(tmp_path: Path, *specs: dict[str, Any], clock: Clock | None = None) -> Any:
    clock = clock or Clock()
    sent = Sent()
    audit = AuditLog.open(tmp_path / "audit.sqlite")
    engine = ActionsEngine(
        EngineConfig(event_topic=EVENT, pending_topic=PENDING, press_min_display_s=3.0),
        Policy([ActionSpec(**s) for s in specs]),
        audit,
        sent,
        cast(Any, type("Gen", (), {"model_id": "test"})()),
        cast(Any, None),  # no generation in these tests: decide() is fed model text
        cast(JsonConstraint, None),
        clock,
    )
    return engine, sent, clock, audit


def window(clock: Clock) -> Window:
    return Window(clock.now - 300, clock.now)


def msg(topic: str, payload: str, *, retain: bool = False, **kw: Any) -> Message:
    return Message(topic, payload.encode(), retain=retain, **kw)


# --- reply topics -------------------------------------------------------------------


RULES = ReplyRules.build(
    answer_topic=f"{BASE}/answer",
    subscribed=("zigbee2mqtt/#", f"{BASE}/ask", APPROVE, REJECT, "homeassistant/status"),
    command_templates=("zigbee2mqtt/{device}/set", "cmnd/{device}/POWER", "lights/{device}"),
    reserved_roots=("homeassistant",),
)


@pytest.mark.parametrize(
    "topic",
    [
        APPROVE,
        REJECT,
        f"{BASE}/ask",
        f"{BASE}/action/event",
        f"{BASE}/action/pending",
        f"{BASE}/summary",
        "edge-agent/other-node/action/approve",
        "zigbee2mqtt/front door lock/set",
        "zigbee2mqtt/office",
        "cmnd/plug/POWER",
        "lights/porch",
        "homeassistant/status",
        "homeassistant/sensor/x/config",
        "tasmota/cmnd/kitchen/POWER",
        "zwave/lock/set",
        "$SYS/broker",
        "a/+/b",
        "",
    ],
)
def test_a_reply_topic_may_not_be_ours_subscribed_or_a_command(topic: str) -> None:
    assert forbidden_reply(topic, RULES) is not None


@pytest.mark.parametrize("topic", [f"{BASE}/answer", f"{BASE}/answer/phone", "my/app/replies"])
def test_the_answer_topic_and_unrelated_topics_are_allowed(topic: str) -> None:
    assert forbidden_reply(topic, RULES) is None


# --- parsing approvals ----------------------------------------------------------------


def test_only_action_id_names_a_proposal() -> None:
    assert parse_approval("approve", msg(APPROVE, '{"action_id": "abc"}')).action_id == "abc"
    by_id = parse_approval("approve", msg(APPROVE, '{"id": "abc"}'))
    assert by_id.refusal == Refusal.NO_ACTION_ID
    assert parse_approval("approve", msg(APPROVE, "abc")).refusal == Refusal.MALFORMED
    assert parse_approval("approve", msg(APPROVE, "press")).press
    retained = parse_approval("approve", msg(APPROVE, '{"action_id": "abc"}', retain=True))
    assert retained.refusal == Refusal.RETAINED


# --- the engine -----------------------------------------------------------------------


def test_press_applies_only_to_the_single_proposal_after_the_display_minimum(
    tmp_path: Path,
) -> None:
    engine, sent, clock, audit = make(tmp_path, LOCK)
    engine.decide(UNLOCK, facts(), window(clock))
    (pending,) = sent.on(PENDING)[-1]["pending"]
    assert pending["device"] == "front door lock"
    assert pending["reason"] == "x"
    assert sent.items[-1][2] is True  # retained
    clock.now += 1
    assert engine.on_approve(msg(APPROVE, "PRESS")) is None
    assert sent.on(EVENT)[-1]["code"] == Refusal.TOO_EARLY
    assert sent.commands() == []
    clock.now += 3
    performed = engine.on_approve(msg(APPROVE, "PRESS"))
    assert performed is not None
    assert performed.event_type == "performed"
    assert sent.commands() == [("zigbee2mqtt/front door lock/set", b'{"state": "UNLOCK"}')]
    assert sent.on(PENDING)[-1] == {**sent.on(PENDING)[-1], "count": 0, "pending": []}
    row = next(r for r in audit.rows() if r.kind == "performed")
    assert row.origin == {
        "topic": APPROVE,
        "retained": False,
        "by": None,
        "user_properties": [],
        "correlation_data": None,
    }
    refused = [r for r in audit.rows() if r.kind == "approval_refused"]
    assert [r.code for r in refused] == [Refusal.TOO_EARLY]


def test_press_with_two_pending_is_ambiguous_and_ids_still_work(tmp_path: Path) -> None:
    fan = {**FAN, "mode": "confirm", "when": None}
    engine, sent, clock, audit = make(tmp_path, LOCK, fan)
    engine.decide(FAN_ON, facts(), window(clock))
    engine.decide(UNLOCK, facts(), window(clock))
    clock.now += 60
    for topic in (APPROVE, REJECT):
        assert (engine.on_approve if topic == APPROVE else engine.on_reject)(
            msg(topic, "PRESS")
        ) is None
        assert sent.on(EVENT)[-1]["code"] == Refusal.AMBIGUOUS
        assert sorted(sent.on(EVENT)[-1]["pending"]) == sorted(engine.pending)
    assert sent.commands() == []
    fan_id = next(i for i, p in engine.pending.items() if p.proposal.action == "fan")
    event = engine.on_approve(msg(APPROVE, json.dumps({"action_id": fan_id, "by": "anna"})))
    assert event is not None
    assert event.proposal.action == "fan"
    assert sent.commands() == [("cmnd/office_fan/POWER", b"ON")]
    assert [r.origin["by"] for r in audit.rows() if r.kind == "performed"] == ["anna"]


def test_forged_replayed_late_retained_and_rejected_approvals_do_nothing(tmp_path: Path) -> None:
    engine, sent, clock, audit = make(tmp_path, LOCK)
    engine.decide(UNLOCK, facts(), window(clock))
    ident = next(iter(engine.pending))
    clock.now += 10
    attempts = [
        (APPROVE, json.dumps({"action_id": ident}), True, Refusal.RETAINED),
        (APPROVE, "PRESS", True, Refusal.RETAINED),
        (APPROVE, json.dumps({"id": ident}), False, Refusal.NO_ACTION_ID),
        (APPROVE, json.dumps({"action_id": "deadbeef0000"}), False, Refusal.UNKNOWN_ID),
        (APPROVE, "yes please", False, Refusal.MALFORMED),
    ]
    for topic, payload, retain, code in attempts:
        assert engine.on_approve(msg(topic, payload, retain=retain)) is None
        assert sent.on(EVENT)[-1]["code"] == code
    assert sent.commands() == []
    engine.on_reject(msg(REJECT, json.dumps({"action_id": ident})))
    assert engine.on_approve(msg(APPROVE, json.dumps({"action_id": ident}))) is None
    assert sent.on(EVENT)[-1]["code"] == Refusal.AFTER_REJECT
    assert sent.commands() == []
    refused = [r.code for r in audit.rows() if r.kind == "approval_refused"]
    assert refused == [c for *_, c in attempts] + [Refusal.AFTER_REJECT]
    # A replay of a performed proposal, and an approval after the expiry.
    engine.decide(UNLOCK, facts(), window(clock))
    second = next(iter(engine.pending))
    clock.now += 10
    engine.on_approve(msg(APPROVE, json.dumps({"action_id": second})))
    assert len(sent.commands()) == 1
    engine.on_approve(msg(APPROVE, json.dumps({"action_id": second})))
    assert sent.on(EVENT)[-1]["code"] == Refusal.REPLAY
    engine.decide(UNLOCK, facts(), window(clock))
    third = next(iter(engine.pending))
    clock.now += 301
    engine.on_approve(msg(APPROVE, json.dumps({"action_id": third})))
    assert sent.on(EVENT)[-1]["code"] == Refusal.EXPIRED
    assert len(sent.commands()) == 1


def test_a_new_proposal_for_a_pending_action_supersedes_it(tmp_path: Path) -> None:
    engine, sent, clock, _ = make(tmp_path, LOCK)
    engine.decide(UNLOCK, facts(), window(clock))
    first = next(iter(engine.pending))
    engine.decide(UNLOCK, facts(), window(clock))
    (second,) = engine.pending
    assert second != first
    superseded = [e for e in sent.on(EVENT) if e.get("code") == "superseded"]
    assert [e["action_id"] for e in superseded] == [first]
    clock.now += 10
    engine.on_approve(msg(APPROVE, json.dumps({"action_id": first})))
    assert sent.on(EVENT)[-1]["code"] == Refusal.SUPERSEDED
    assert sent.commands() == []


def test_a_proposal_pending_at_shutdown_is_expired_at_the_next_start(tmp_path: Path) -> None:
    engine, _, clock, audit = make(tmp_path, LOCK)
    engine.decide(UNLOCK, facts(), window(clock))
    ident = next(iter(engine.pending))
    audit.close()
    engine, sent, clock, audit = make(tmp_path, LOCK)
    last = audit.rows()[-1]
    assert (last.action_id, last.kind, last.code) == (ident, "expired", "restart")
    engine.on_approve(msg(APPROVE, json.dumps({"action_id": ident})))
    assert sent.on(EVENT)[-1]["code"] == Refusal.EXPIRED
    assert sent.commands() == []


def test_auto_runs_only_while_its_condition_holds_and_the_model_chose_freely(
    tmp_path: Path,
) -> None:
    engine, sent, clock, audit = make(tmp_path, FAN)
    engine.decide(FAN_ON, facts(600), window(clock))  # CO2 fine: held for approval
    assert sent.commands() == []
    assert len(engine.pending) == 1
    assert "condition does not hold" in sent.on(EVENT)[-1]["detail"]
    engine.decide(FAN_ON, facts(1500), window(clock), forced=True)  # grammar overrode it
    assert sent.commands() == []
    assert len(engine.pending) == 1
    engine.decide(FAN_ON, facts(1500), window(clock))
    assert sent.commands() == [("cmnd/office_fan/POWER", b"ON")]
    performed = next(r for r in audit.rows() if r.kind == "performed")
    assert performed.origin == {"by": "policy", "condition": "office co2 1500 > 1000"}


def test_auto_without_a_condition_acts_like_confirm(tmp_path: Path) -> None:
    engine, sent, clock, _ = make(tmp_path, {**FAN, "when": None})
    engine.decide(FAN_ON, facts(1500), window(clock))
    assert sent.commands() == []
    assert sent.on(EVENT)[-1]["mode"] == "confirm"
    warnings = ActionsSettings(allow=[{**FAN, "when": None}]).warnings()
    assert len(warnings) == 1
    assert "acts like 'confirm'" in warnings[0]


def test_a_condition_reads_fresh_matching_facts_only() -> None:
    cond = Condition(metric="co2", above=1000, devices=("office",))
    assert condition_holds(cond, [co2(1200)]) == "office co2 1200 > 1000"
    assert condition_holds(cond, [co2(900)]) is None
    assert condition_holds(cond, [co2(1200, device="garage")]) is None
    stale = MetricFacts("office", "co2", 3, 1500, 1500, 1500, 1500, 0, 0, stale=True)
    assert condition_holds(cond, [stale]) is None
    with pytest.raises(ValueError, match="above"):
        Condition(metric="co2")


def test_a_retained_question_is_audited(tmp_path: Path) -> None:
    engine, _, _, audit = make(tmp_path, LOCK)
    engine.record_ignored("ask", msg(f"{BASE}/ask", "hi", retain=True), "retained")
    (row,) = audit.rows()
    assert (row.kind, row.code, row.origin["retained"]) == ("ignored", "retained", True)


def test_actions_log_shows_refusals_and_what_decided(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine, _, clock, _ = make(tmp_path, LOCK)
    engine.decide(UNLOCK, facts(), window(clock))
    ident = next(iter(engine.pending))
    engine.on_approve(msg(APPROVE, "PRESS", retain=True))
    clock.now += 10
    corr = {"correlation_data": b"\x01\x02", "user_properties": (("app", "phone"),)}
    engine.on_approve(msg(APPROVE, json.dumps({"action_id": ident, "by": "anna"}), **corr))
    config = tmp_path / "cli.toml"
    config.write_text(f'[actions]\naudit_path = "{tmp_path / "audit.sqlite"}"\n')
    lines = actions_cli(capsys, "log", "-c", str(config)).splitlines()
    assert [line.split()[1] for line in lines] == ["proposed", "approval_refused", "performed"]
    assert "[retained: approve refused]" in lines[1]
    assert f"via {APPROVE} (retained)" in lines[1]
    assert f"<by=anna via {APPROVE} props=app=phone corr=0102>" in lines[2]


def test_the_prompt_shows_a_worked_example_per_action_and_no_placeholder() -> None:
    specs = [ActionSpec(**s) for s in (LOCK, FAN)]
    text = proposal_prompt(facts(), specs, style="completion").text
    assert "short reason" not in text
    assert "..." not in text
    examples = [line for line in text.splitlines() if line.startswith("JSON: {")]
    assert any('"action": "unlock_door"' in e for e in examples)
    assert any('"action": "fan"' in e and '"state": "ON"' in e for e in examples)
    assert any('"action": "none"' in e for e in examples)
    for example in examples:
        assert Policy(specs).shape(json.loads(example.removeprefix("JSON: ")))[1].ok
    assert text.endswith("Alerts: none\nJSON:")


def test_a_propose_mode_proposal_is_not_expired_at_restart(tmp_path: Path) -> None:
    engine, _, clock, audit = make(tmp_path, {**LOCK, "mode": "propose"})
    engine.decide(UNLOCK, facts(), window(clock))
    audit.close()
    _, _, _, audit = make(tmp_path, LOCK)
    assert [r.kind for r in audit.rows()] == ["proposed"]
