"""Wire and domain types of actions: proposals, decisions and the events we publish.

Imports only the package's domain types: every action module may import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_agent.domain import SCHEMA_VERSION, Window

ActionEventType = Literal["proposed", "performed", "rejected", "expired", "failed"]
ParamValue = str | int | float
NO_ACTION = "none"
"""The action id the model picks when nothing should be done."""


class Code:
    """Machine-readable reason codes carried by rejections, expiries and failures."""

    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    UNKNOWN_ACTION = "unknown_action"
    ACTION_OFF = "action_off"
    DEVICE_NOT_ALLOWED = "device_not_allowed"
    UNKNOWN_DEVICE = "unknown_device"
    PARAM_MISSING = "param_missing"
    PARAM_UNEXPECTED = "param_unexpected"
    PARAM_TYPE = "param_type"
    PARAM_RANGE = "param_range"
    REASON_TOO_LONG = "reason_too_long"
    COOLDOWN = "cooldown"
    RATE_LIMIT = "rate_limit"
    QUIET_HOURS = "quiet_hours"
    DUPLICATE_PENDING = "duplicate_pending"
    USER_REJECTED = "user_rejected"
    CONFIRM_TIMEOUT = "confirm_timeout"
    SUPERSEDED = "superseded"
    RESTART = "restart"
    GENERATION_FAILED = "generation_failed"
    PUBLISH_FAILED = "publish_failed"


@dataclass(frozen=True, slots=True)
class Proposal:
    """One proposed action, as the policy normalised it (or as far as it got)."""

    id: str
    """The proposal's id, published as ``action_id`` (and ``id``) and used to approve it."""
    action: str
    device: str
    params: dict[str, ParamValue]
    reason: str
    window: Window
    ts: float
    model: str = ""
    prompt_version: str = ""
    raw: str = ""
    """What the model wrote, verbatim, for the audit log."""

    def describe(self) -> str:
        """``action(device, k=v, ...)`` for logs and the audit printout."""
        args = ", ".join([self.device, *(f"{k}={v}" for k, v in self.params.items())])
        return f"{self.action}({args})"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's decision on one proposal: ok, or a reason code with a detail."""

    code: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the proposal passed every check."""
        return not self.code


@dataclass(frozen=True, slots=True)
class ActionEvent:
    """One step of a proposal's life, published on ``<base>/<node_id>/action/event``.

    ``event_type`` is the key Home Assistant's MQTT ``event`` entity reads.
    """

    event_type: ActionEventType
    proposal: Proposal
    ts: float
    mode: str
    code: str = ""
    detail: str = ""
    expires_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (also what the audit log stores)."""
        p = self.proposal
        return {
            "schema_version": SCHEMA_VERSION,
            "event_type": self.event_type,
            "action_id": p.id,
            "id": p.id,
            "action": p.action,
            "device": p.device,
            "params": p.params,
            "reason": p.reason,
            "mode": self.mode,
            "code": self.code,
            "detail": self.detail,
            "expires_at": self.expires_at,
            "window": {"start": p.window.start, "end": p.window.end},
            "model": p.model,
            "prompt_version": p.prompt_version,
            "ts": self.ts,
            **self.extra,
        }

    def to_payload(self) -> bytes:
        """Encode as the versioned JSON document subscribers receive."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False).encode()
