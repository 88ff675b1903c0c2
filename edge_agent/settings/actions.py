"""The actions allowlist: typed parameters, risk, modes, limits and quiet hours."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator

from edge_agent.settings.base import Section
from edge_agent.templates import (
    TemplateError,
    TemplateValue,
    check_template,
    placeholders,
)

_ACTION_NAME = r"^[a-z][a-z0-9_]{0,39}$"
# Enum values and device names go between JSON quotes unescaped (constrained decoding)
# and devices into topics: no quote, backslash, control character or MQTT wildcard.
_ACTION_TEXT = r'^[^"\\\x00-\x1f]{1,64}$'
_DEVICE_NAME = r'^[^"\\\x00-\x1f/+#]{1,64}$'


class EnumParam(Section):
    """A parameter that takes one of a fixed set of strings, e.g. ON/OFF."""

    type: Literal["enum"] = Field(description="'enum': one of 'values'.")
    values: tuple[Annotated[str, Field(pattern=_ACTION_TEXT)], ...] = Field(
        min_length=1, description="The allowed strings, e.g. ['ON', 'OFF']."
    )


class IntParam(Section):
    """An integer parameter within [min, max], e.g. brightness 0-254."""

    type: Literal["int"] = Field(description="'int': a whole number in [min, max].")
    min: int = Field(ge=-1_000_000, le=1_000_000, description="Smallest allowed value.")
    max: int = Field(ge=-1_000_000, le=1_000_000, description="Largest allowed value.")

    @model_validator(mode="after")
    def _check_order(self) -> IntParam:
        if self.min > self.max:
            raise ValueError(f"min {self.min} exceeds max {self.max}")
        return self


class FloatParam(Section):
    """A decimal parameter within [min, max], written with at most ``decimals`` digits."""

    type: Literal["float"] = Field(description="'float': a decimal number in [min, max].")
    min: float = Field(ge=-1_000_000, le=1_000_000, description="Smallest allowed value.")
    max: float = Field(ge=-1_000_000, le=1_000_000, description="Largest allowed value.")
    decimals: int = Field(1, ge=0, le=3, description="Most digits after the decimal point.")

    @model_validator(mode="after")
    def _check_order(self) -> FloatParam:
        if self.min > self.max:
            raise ValueError(f"min {self.min} exceeds max {self.max}")
        return self


ActionParam = Annotated[EnumParam | IntParam | FloatParam, Field(discriminator="type")]


class Condition(Section):
    """A deterministic reason for an ``auto`` action: a metric's current value crosses a bound.

    Checked by the policy over the facts of the window being decided on: it holds when
    at least one matching reading (``metric`` on one of ``devices``, in ``area``) is
    above ``above`` or below ``below``.
    """

    metric: str = Field(min_length=1, max_length=64, description="Metric key, e.g. 'co2'.")
    above: float | None = Field(None, description="Holds when a reading is above this.")
    below: float | None = Field(None, description="Holds when a reading is below this.")
    devices: tuple[str, ...] = Field(
        (), description="Sensor devices whose readings count; empty: any device."
    )
    area: str | None = Field(None, description="Only readings of this area; unset: any.")

    @model_validator(mode="after")
    def _check_bound(self) -> Condition:
        if self.above is None and self.below is None:
            raise ValueError("a condition needs 'above' or 'below' (or both)")
        return self


class ActionSpec(Section):
    """One allowlisted action: what the model may propose and how it is carried out."""

    id: str = Field(pattern=_ACTION_NAME, description="Stable id, e.g. 'hall_light'.")
    description: str = Field(
        min_length=1, max_length=200, description="What it does, shown to the model."
    )
    topic: str = Field(
        min_length=1,
        description="Topic template, e.g. 'zigbee2mqtt/{device}/set' or 'cmnd/{device}/POWER'.",
    )
    payload: str = Field(
        description="Payload template with {device} and {param} slots; a template starting "
        'with { or [ must be JSON once filled, e.g. {"state": "{state}"}.',
    )
    params: dict[str, ActionParam] = Field(
        default_factory=dict, description="Typed parameters by name, in proposal order."
    )
    devices: tuple[Annotated[str, Field(pattern=_DEVICE_NAME)], ...] = Field(
        min_length=1, description="Devices this action may target (names as in the facts)."
    )
    risk: Literal["low", "medium", "high"] = Field(description="How much harm a mistake does.")
    mode: Literal["off", "propose", "confirm", "auto"] = Field(
        "propose",
        description="'off': never; 'propose': publish only; 'confirm': run once approved "
        "on <base>/<node_id>/action/approve; 'auto': run at once (low risk only), and only "
        "while 'when' holds; without 'when' it acts like 'confirm'.",
    )
    when: Condition | None = Field(
        None,
        description="For mode 'auto': the facts that must hold to run without approval, "
        "e.g. { metric = 'co2', above = 1000 }. Otherwise the proposal awaits approval.",
    )
    cooldown_s: float = Field(
        300.0, ge=0, description="Least time between two runs on the same device."
    )
    max_per_hour: int = Field(4, ge=1, le=3600, description="Most runs in any rolling hour.")
    confirm_expiry_s: float = Field(
        300.0, gt=0, le=86_400, description="How long a 'confirm' proposal awaits approval."
    )

    @model_validator(mode="after")
    def _check_action(self) -> ActionSpec:
        if self.mode == "auto" and self.risk != "low":
            raise ValueError(f"mode 'auto' needs risk 'low' (got risk {self.risk!r})")
        for name in self.params:
            if not re.fullmatch(_ACTION_NAME, name) or name == "device":
                raise ValueError(f"parameter name {name!r}: use [a-z][a-z0-9_]*, not 'device'")
        slots = ("device", *self.params)
        sample: dict[str, TemplateValue] = {"device": self.devices[0]}
        for name, param in self.params.items():
            sample[name] = param.values[0] if isinstance(param, EnumParam) else param.min
        try:
            check_template(self.topic, slots, sample, what="topic", as_json=False)
            check_template(self.payload, slots, sample, what="payload")
        except TemplateError as exc:
            raise ValueError(str(exc)) from exc
        if "+" in self.topic or "#" in self.topic:
            raise ValueError("topic template must not contain MQTT wildcards")
        for name in placeholders(self.topic):
            slot = self.params.get(name)
            if isinstance(slot, EnumParam) and any(set(v) & set("/+#") for v in slot.values):
                raise ValueError(f"parameter {name!r} is in the topic: no '/', '+' or '#'")
        used = set(placeholders(self.topic)) | set(placeholders(self.payload))
        if len(self.devices) > 1 and "device" not in used:
            raise ValueError("several devices but neither template uses {device}")
        return self

    @property
    def auto_ready(self) -> bool:
        """Mode 'auto' with a condition: may run without approval when it holds."""
        return self.mode == "auto" and self.when is not None

    @property
    def effective_mode(self) -> str:
        """The mode the engine applies: 'auto' without a condition acts like 'confirm'."""
        return "confirm" if self.mode == "auto" and self.when is None else self.mode


class QuietHours(Section):
    """A daily span during which no action is carried out."""

    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Start, 'HH:MM'.")
    end: str = Field(
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="End, 'HH:MM'; may be past midnight."
    )
    timezone: str | None = Field(
        None, description="IANA time zone, e.g. 'Europe/Paris'; unset: the system's."
    )

    @model_validator(mode="after")
    def _check_zone(self) -> QuietHours:
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        return self


class ActionsSettings(Section):
    """Allowlisted actions the model may propose; code decides what runs."""

    allow: tuple[ActionSpec, ...] = Field(
        (), description="The allowlist; empty disables proposals ([[actions.allow]] tables)."
    )
    audit_path: Path = Field(
        Path("/var/lib/edge-agent/actions.sqlite"),
        description="SQLite file recording every proposal and decision.",
    )
    on_anomaly: bool = Field(True, description="Ask for a proposal after an anomaly summary.")
    interval_s: float = Field(
        0.0, ge=0, description="Also ask for a proposal every this many seconds; 0: never."
    )
    max_new_tokens: int = Field(
        192, ge=32, le=1024, description="Token budget of one proposal (JSON included)."
    )
    reason_max_chars: int = Field(
        120, ge=8, le=500, description="Longest 'reason' the model may write (UTF-8 bytes)."
    )
    quiet_hours: QuietHours | None = Field(
        None, description="Optional daily span without any action, e.g. 22:00-07:00."
    )
    press_min_display_s: float = Field(
        3.0,
        ge=0,
        le=3600,
        description="A bare PRESS approves only a proposal pending (and shown) this long, "
        "and only when it is the one pending; JSON approvals name their action_id.",
    )

    @model_validator(mode="after")
    def _check_unique(self) -> ActionsSettings:
        ids = [a.id for a in self.allow]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup or "none" in ids:
            raise ValueError(f"action ids must be unique and not 'none': {sorted(dup) or 'none'}")
        return self

    def warnings(self) -> list[str]:
        """Settings that load but do not do what they seem to (for ``config check``)."""
        return [
            f"actions.allow {a.id}: mode 'auto' has no 'when' condition, so it acts like "
            "'confirm' (each proposal awaits approval); add e.g. when = { metric = 'co2', "
            "above = 1000 }"
            for a in self.allow
            if a.mode == "auto" and a.when is None
        ]
