"""Approvals and rejections as typed requests, and why one may be refused (pure code).

A JSON approval names its proposal by ``action_id`` and nothing else: an answer echoes
the asker's ``id``, so ``id`` must never approve. ``PRESS`` (Home Assistant's button)
names none; the engine applies it only when exactly one proposal is pending and has been
shown long enough. Each request keeps where it came from, for the audit log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from edge_agent.domain import SCHEMA_VERSION
from edge_agent.transport.base import Message

Verb = Literal["approve", "reject"]
PRESS = "PRESS"
_ID_MAX = 64
_BY_MAX = 64


class Refusal:
    """Reason codes of an ignored approval or rejection (audit ``code``, event ``code``)."""

    RETAINED = "retained"
    """A retained message: left on the broker by anyone, at any time; never a decision."""
    MALFORMED = "malformed"
    """Neither ``PRESS`` nor a JSON object."""
    NO_ACTION_ID = "no_action_id"
    """A JSON object without a string ``action_id`` (e.g. an answer's echoed ``id``)."""
    UNKNOWN_ID = "unknown_id"
    """No proposal with that id was ever made here: forged or mistyped."""
    REPLAY = "replay"
    """The proposal already ran (or failed): a second approval does nothing."""
    AFTER_REJECT = "after_reject"
    """The proposal was rejected; it cannot be approved (nor rejected) again."""
    EXPIRED = "expired"
    """The proposal's confirm time ran out (or it was pending at a restart)."""
    SUPERSEDED = "superseded"
    """A newer proposal for the same action replaced it."""
    NOTHING_PENDING = "nothing_pending"
    """``PRESS`` with no proposal pending."""
    AMBIGUOUS = "ambiguous"
    """``PRESS`` with several proposals pending: it cannot say which one."""
    TOO_EARLY = "too_early"
    """``PRESS`` before the only pending proposal was on display for the minimum time."""

    CLOSED: ClassVar[dict[str, str]] = {
        "performed": REPLAY,
        "failed": REPLAY,
        "rejected": AFTER_REJECT,
        "expired": EXPIRED,
        "superseded": SUPERSEDED,
    }
    """The refusal for an approval of a proposal whose life ended with this step."""


@dataclass(frozen=True, slots=True)
class Origin:
    """What delivered a decision: its topic, retain flag, sender's tags and correlation."""

    topic: str
    retained: bool = False
    by: str | None = None
    """The JSON ``by`` field (who approved, as the sender says: not authenticated)."""
    user_properties: tuple[tuple[str, str], ...] = ()
    correlation_data: str | None = None
    """MQTT 5 Correlation Data, hex."""

    @classmethod
    def of(cls, message: Message, by: str | None = None) -> Origin:
        """The origin of a received message."""
        corr = message.correlation_data
        return cls(
            message.topic,
            message.retain,
            by,
            tuple((str(k)[:64], str(v)[:200]) for k, v in message.user_properties[:16]),
            corr[:64].hex() if corr else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "topic": self.topic,
            "retained": self.retained,
            "by": self.by,
            "user_properties": [list(p) for p in self.user_properties],
            "correlation_data": self.correlation_data,
        }


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One message on the approve or reject topic, decoded."""

    verb: Verb
    action_id: str | None
    """The proposal it names; None for a bare ``PRESS``."""
    origin: Origin
    refusal: str = ""
    """Set when the message is refused before any proposal is looked at."""

    @property
    def press(self) -> bool:
        """A bare ``PRESS`` (no id)."""
        return self.action_id is None and not self.refusal


def parse_approval(verb: Verb, message: Message) -> ApprovalRequest:
    """Decode ``message``; a request that can never apply carries its ``refusal``."""
    text = message.payload.decode("utf-8", errors="replace").strip()
    by: str | None = None
    ident: str | None = None
    refusal = ""
    if text.upper() == PRESS:
        pass
    else:
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            refusal = Refusal.MALFORMED
        else:
            raw_by = doc.get("by")
            by = str(raw_by)[:_BY_MAX] if isinstance(raw_by, str | int) else None
            raw_id = doc.get("action_id")
            if isinstance(raw_id, str) and raw_id.strip():
                ident = raw_id.strip()[:_ID_MAX]
            else:
                refusal = Refusal.NO_ACTION_ID
    if message.retain:
        refusal = Refusal.RETAINED  # checked last: it overrides whatever the payload says
    return ApprovalRequest(verb, ident, Origin.of(message, by), refusal)


@dataclass(frozen=True, slots=True)
class RefusedApproval:
    """An approval or rejection that did nothing, published on the action event topic."""

    request: ApprovalRequest
    code: str
    detail: str
    ts: float
    pending: tuple[str, ...] = ()
    """Ids pending at the time (e.g. the candidates of an ambiguous ``PRESS``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_type": "approval_refused",
            "verb": self.request.verb,
            "action_id": self.request.action_id,
            "code": self.code,
            "detail": self.detail,
            "pending": list(self.pending),
            "origin": self.request.origin.to_dict(),
            "ts": self.ts,
        }

    def to_payload(self) -> bytes:
        """The versioned JSON document subscribers receive."""
        return json.dumps(self.to_dict(), ensure_ascii=False).encode()
