"""Allowlist configuration: templates must parse, parameters need a type, auto is low risk."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import ConfigError
from edge_agent.settings import ActionSpec, ActionsSettings, FloatParam, load_settings
from edge_agent.templates import render


def light(**over: Any) -> dict[str, Any]:
    """A valid zigbee2mqtt light action, with overrides."""
    spec: dict[str, Any] = {
        "id": "hall_light",
        "description": "Switch the hall light",
        "topic": "zigbee2mqtt/{device}/set",
        "payload": '{"state": "{state}", "brightness": {brightness}}',
        "devices": ["hall_lamp"],
        "risk": "low",
        "mode": "confirm",
        "params": {
            "state": {"type": "enum", "values": ["ON", "OFF"]},
            "brightness": {"type": "int", "min": 0, "max": 254},
        },
    }
    spec.update(over)
    return spec


def test_a_valid_action_renders_its_topic_and_payload() -> None:
    spec = ActionSpec(**light())
    values: dict[str, str | int | float] = {"device": "hall_lamp", "state": "ON", "brightness": 200}
    assert render(spec.topic, values) == "zigbee2mqtt/hall_lamp/set"
    assert render(spec.payload, values) == '{"state": "ON", "brightness": 200}'


def test_a_tasmota_plain_payload_is_not_json() -> None:
    spec = ActionSpec(
        **light(
            topic="cmnd/{device}/POWER",
            payload="{state}",
            params={"state": {"type": "enum", "values": ["ON", "OFF"]}},
        )
    )
    assert render(spec.payload, {"device": "plug", "state": "OFF"}) == "OFF"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"topic": "zigbee2mqtt/{room}/set"}, "unknown placeholder(s) room"),
        ({"payload": '{"state": "{colour}"}'}, "unknown placeholder(s) colour"),
        ({"payload": '{"state": "{state}", brightness: {brightness}}'}, "not valid JSON"),
        ({"payload": '{"state": "{state}", "brightness": {brightness}'}, "not valid JSON"),
        ({"topic": "zigbee2mqtt/{device}/set}"}, "unmatched brace"),
        ({"params": {"state": {"values": ["ON"]}}}, "Unable to extract tag"),
        ({"params": {"level": {"type": "int", "min": 5, "max": 1}}}, "exceeds max"),
        ({"risk": "medium", "mode": "auto"}, "mode 'auto' needs risk 'low'"),
        ({"risk": "high", "mode": "auto"}, "mode 'auto' needs risk 'low'"),
        ({"topic": "zigbee2mqtt/+/set"}, "wildcards"),
        ({"devices": ["hall/lamp"]}, "String should match pattern"),
        ({"devices": ["a", "b"], "topic": "x/set", "payload": "{state}"}, "neither template"),
        ({"id": "Unlock Door"}, "String should match pattern"),
    ],
)
def test_bad_actions_are_refused_with_a_reason(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ActionSpec(**light(**over))


def test_ids_are_unique_and_none_is_reserved() -> None:
    with pytest.raises(ValueError, match="unique"):
        ActionsSettings(allow=[light(), light()])
    with pytest.raises(ValueError, match="unique"):
        ActionsSettings(allow=[light(id="none")])


def test_a_toml_allowlist_loads_and_errors_name_the_key(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        """
[actions]
audit_path = "/tmp/x.sqlite"
quiet_hours = { start = "22:00", end = "07:00", timezone = "UTC" }

[[actions.allow]]
id = "heat"
description = "Set the radiator"
topic = "zigbee2mqtt/{device}/set"
payload = '{"current_heating_setpoint": {target}}'
devices = ["living_trv"]
risk = "medium"
mode = "confirm"
params.target = { type = "float", min = 5, max = 30, decimals = 1 }
"""
    )
    actions = load_settings(good).actions
    target = actions.allow[0].params["target"]
    assert isinstance(target, FloatParam)
    assert target.max == 30
    assert actions.quiet_hours is not None
    assert actions.quiet_hours.end == "07:00"
    bad = tmp_path / "bad.toml"
    bad.write_text(
        good.read_text().replace(
            'risk = "medium"\nmode = "confirm"', 'risk = "medium"\nmode = "auto"'
        )
    )
    with pytest.raises(ConfigError, match=r"actions\.allow\.0: .*auto"):
        load_settings(bad)


def test_config_check_warns_about_auto_without_a_condition(tmp_path: Path) -> None:
    """Valid, and safe (it acts like confirm), but not what it reads: a warning, exit 0."""
    config = tmp_path / "c.toml"
    config.write_text(
        "[[actions.allow]]\nid = 'fan'\ndescription = 'Fan'\ntopic = 'cmnd/{device}/POWER'\n"
        "payload = 'ON'\ndevices = ['fan']\nrisk = 'low'\nmode = 'auto'\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", "--schema-only", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "warning: actions.allow fan: mode 'auto' has no 'when' condition" in run.stderr
    config.write_text(config.read_text() + "when = { metric = 'co2', above = 1000 }\n")
    run = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", "--schema-only", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "warning" not in run.stderr
