"""The policy re-validates every proposal: shape, allowlist, ranges, cooldown, rate, quiet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from edge_agent.actions.policy import History, Policy, in_quiet_hours, parse_output
from edge_agent.actions.types import Code
from edge_agent.settings import ActionSpec, QuietHours
from tests.test_actions_settings import light

DEVICES = {"hall_lamp", "living_trv"}
HEAT = {
    "id": "heat",
    "description": "Set the radiator",
    "topic": "zigbee2mqtt/{device}/set",
    "payload": '{"current_heating_setpoint": {target}}',
    "devices": ["living_trv"],
    "risk": "medium",
    "mode": "confirm",
    "params": {"target": {"type": "float", "min": 5, "max": 30, "decimals": 1}},
}


def policy(**light_over: Any) -> Policy:
    return Policy([ActionSpec(**light(**light_over)), ActionSpec(**HEAT)], reason_max=40)


def doc(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "action": "hall_light",
        "device": "hall_lamp",
        "params": {"state": "ON", "brightness": 120},
        "reason": "dark",
    }
    base.update(over)
    return base


def code_of(p: Policy, d: object, history: History | None = None, now: float = 1e6) -> str:
    _, verdict = p.validate(d, devices=DEVICES, history=history or History(), now=now)
    return verdict.code


def test_a_good_proposal_passes_and_none_means_no_action() -> None:
    cand, verdict = policy().validate(doc(), devices=DEVICES, history=History(), now=0)
    assert verdict.ok
    assert cand is not None
    assert cand.params == {"state": "ON", "brightness": 120}
    none, verdict = policy().validate(
        {"action": "none", "reason": "all fine"}, devices=DEVICES, history=History(), now=0
    )
    assert verdict.ok
    assert none is not None
    assert none.action == "none"


@pytest.mark.parametrize(
    ("proposal", "code"),
    [
        ([1, 2], Code.SCHEMA),
        (doc(extra=1), Code.SCHEMA),
        (doc(action="unlock_front_door"), Code.UNKNOWN_ACTION),
        (doc(action="heat", device="hall_lamp", params={"target": 20}), Code.DEVICE_NOT_ALLOWED),
        (doc(device="front_door"), Code.DEVICE_NOT_ALLOWED),
        (doc(params={"state": "ON"}), Code.PARAM_MISSING),
        (doc(params={"state": "ON", "brightness": 1, "colour": "red"}), Code.PARAM_UNEXPECTED),
        (doc(params={"state": "UNLOCK", "brightness": 1}), Code.PARAM_RANGE),
        (doc(params={"state": "ON", "brightness": 255}), Code.PARAM_RANGE),
        (doc(params={"state": "ON", "brightness": -1}), Code.PARAM_RANGE),
        (doc(params={"state": "ON", "brightness": 12.5}), Code.PARAM_TYPE),
        (doc(params={"state": "ON", "brightness": True}), Code.PARAM_TYPE),
        (doc(params={"state": "ON", "brightness": "12"}), Code.PARAM_TYPE),
        (doc(action="heat", device="living_trv", params={"target": 30.5}), Code.PARAM_RANGE),
        (
            doc(action="heat", device="living_trv", params={"target": float("nan")}),
            Code.PARAM_RANGE,
        ),
        (doc(reason="x" * 41), Code.REASON_TOO_LONG),
        ({"action": "none", "device": "hall_lamp", "reason": ""}, Code.SCHEMA),
    ],
)
def test_every_rejection_carries_a_reason_code(proposal: object, code: str) -> None:
    assert code_of(policy(), proposal) == code


def test_invalid_json_and_switched_off_actions() -> None:
    _, verdict = parse_output('{"action": "hall_light"')
    assert verdict.code == Code.INVALID_JSON
    assert code_of(policy(mode="off"), doc()) == Code.ACTION_OFF


def test_the_device_must_be_in_the_current_facts() -> None:
    _, verdict = policy().validate(doc(), devices={"living_trv"}, history=History(), now=0)
    assert verdict.code == Code.UNKNOWN_DEVICE


def test_cooldown_is_per_device_and_ends() -> None:
    p = policy(cooldown_s=300, devices=["hall_lamp", "porch"])
    history = History()
    history.record("hall_light", "hall_lamp", 1000.0)
    assert code_of(p, doc(), history, now=1299.0) == Code.COOLDOWN
    assert code_of(p, doc(), history, now=1300.0) == ""
    both = {*DEVICES, "porch"}
    _, verdict = p.validate(doc(device="porch"), devices=both, history=history, now=1001.0)
    assert verdict.ok


def test_rate_limit_counts_a_rolling_hour() -> None:
    p = policy(cooldown_s=0, max_per_hour=2)
    history = History()
    history.record("hall_light", "hall_lamp", 0.0)
    history.record("hall_light", "hall_lamp", 1800.0)
    assert code_of(p, doc(), history, now=3599.0) == Code.RATE_LIMIT
    assert code_of(p, doc(), history, now=3600.0) == ""


def test_a_pending_duplicate_is_refused() -> None:
    _, verdict = policy().validate(
        doc(), devices=DEVICES, history=History(), now=0, pending=[("hall_light", "hall_lamp")]
    )
    assert verdict.code == Code.DUPLICATE_PENDING


def at(hh: int, mm: int) -> float:
    return datetime(2025, 1, 1, hh, mm, tzinfo=UTC).timestamp()


def test_quiet_hours_across_midnight() -> None:
    quiet = QuietHours(start="22:00", end="07:00", timezone="UTC")
    assert in_quiet_hours(quiet, at(23, 0))
    assert in_quiet_hours(quiet, at(6, 59))
    assert not in_quiet_hours(quiet, at(7, 0))
    assert not in_quiet_hours(quiet, at(12, 0))
    p = Policy([ActionSpec(**light())], quiet_hours=quiet)
    assert code_of(p, doc(), now=at(23, 30)) == Code.QUIET_HOURS
    assert code_of(p, doc(), now=at(12, 0)) == ""
