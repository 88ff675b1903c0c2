"""Pending proposals: which one an approval means, and their retained list on
``<base>/<node_id>/action/pending``.

What a person approves must be what they saw: Home Assistant shows this list as a
sensor (device, params, reason, id, expiry), and its Approve button's bare ``PRESS``
applies only when exactly one proposal is listed. An empty list (``"pending": []``)
replaces the retained message when nothing awaits approval, so a restart or a new
subscriber never shows a stale proposal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edge_agent.actions.approval import ApprovalRequest, Refusal
from edge_agent.actions.types import Proposal
from edge_agent.domain import SCHEMA_VERSION

STATE_MAX_CHARS = 255
_CLOSED_MAX = 10_000  # ids remembered to name a late approval's refusal (then: the audit)


@dataclass(frozen=True, slots=True)
class Pending:
    """A proposal awaiting approval."""

    proposal: Proposal
    expires_at: float
    devices: frozenset[str]
    """Devices in the facts it was based on (re-checked at approval)."""
    mode: str


class _Publish(Protocol):
    def __call__(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None: ...


def describe(proposal: Proposal) -> str:
    """``fan_on(office_fan, speed=2): CO2 is high`` in at most 255 characters."""
    text = proposal.describe() + (f": {proposal.reason}" if proposal.reason else "")
    return text[:STATE_MAX_CHARS]


def pending_doc(
    items: Sequence[tuple[Proposal, float, str]], now: float, press_min_display_s: float
) -> dict[str, Any]:
    """The published document: ``count``, a one-line ``state`` and each proposal."""
    pending = [
        {
            "action_id": p.id,
            "action": p.action,
            "device": p.device,
            "params": p.params,
            "reason": p.reason,
            "mode": mode,
            "proposed_at": p.ts,
            "expires_at": expires,
            "press_from": p.ts + press_min_display_s,
            "summary": describe(p),
        }
        for p, expires, mode in items
    ]
    if not pending:
        state = "none"
    elif len(pending) == 1:
        state = str(pending[0]["summary"])
    else:
        # Several: a bare PRESS is refused ('ambiguous'); approve each by its id.
        state = f"{len(pending)} pending: approve each by action_id"
    return {
        "schema_version": SCHEMA_VERSION,
        "count": len(pending),
        "state": state[:STATE_MAX_CHARS],
        "pending": pending,
        "ts": now,
    }


class PendingBoard:
    """Publishes the pending list whenever it changes (nothing if no topic is set)."""

    def __init__(self, publish: _Publish, topic: str, press_min_display_s: float) -> None:
        self._publish = publish
        self._topic = topic
        self._min = press_min_display_s

    def show(self, items: Sequence[tuple[Proposal, float, str]], now: float) -> None:
        """Publish ``items`` (proposal, expires_at, mode), retained."""
        if not self._topic:
            return
        doc = pending_doc(items, now, self._min)
        self._publish(self._topic, json.dumps(doc, ensure_ascii=False).encode(), retain=True)


class PendingBook:
    """The pending proposals (oldest first), how closed ones ended, and the board."""

    def __init__(self, board: PendingBoard, press_min_display_s: float) -> None:
        self.items: dict[str, Pending] = {}
        self._closed: dict[str, str] = {}
        self._board = board
        self._min = press_min_display_s

    def show(self, now: float) -> None:
        """Publish the current list."""
        self._board.show([(p.proposal, p.expires_at, p.mode) for p in self.items.values()], now)

    def close(self, ident: str, how: str) -> None:
        """Remember how ``ident``'s life ended ('performed', 'superseded', ...)."""
        self._closed[ident] = how
        while len(self._closed) > _CLOSED_MAX:
            del self._closed[next(iter(self._closed))]

    def match(
        self, request: ApprovalRequest, now: float, last_kind: Callable[[str], str | None]
    ) -> tuple[str, Pending | str]:
        """(id, the pending proposal ``request`` means) or (refusal code, detail).

        ``last_kind`` looks an id up in the audit: it names the refusal of an approval
        for a proposal of an earlier run.
        """
        if request.refusal:
            return request.refusal, ""
        if request.action_id is not None:
            found = self.items.get(request.action_id)
            if found is not None:
                return request.action_id, found
            ended = self._closed.get(request.action_id) or last_kind(request.action_id)
            return Refusal.CLOSED.get(ended or "", Refusal.UNKNOWN_ID), ""
        # A bare PRESS names nothing: it may only mean the one proposal on display.
        if not self.items:
            return Refusal.NOTHING_PENDING, ""
        if len(self.items) > 1:
            return Refusal.AMBIGUOUS, f"{len(self.items)} pending; name one by action_id"
        ident, pending = next(iter(self.items.items()))
        shown = now - pending.proposal.ts
        if request.verb == "approve" and shown < self._min:
            return Refusal.TOO_EARLY, f"shown {shown:.1f}s of {self._min:g}s"
        return ident, pending
