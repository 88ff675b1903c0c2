"""The retained list of pending proposals on ``<base>/<node_id>/action/pending``.

What a person approves must be what they saw: Home Assistant shows this list as a
sensor (device, params, reason, id, expiry), and its Approve button's bare ``PRESS``
applies only when exactly one proposal is listed. An empty list (``"pending": []``)
replaces the retained message when nothing awaits approval, so a restart or a new
subscriber never shows a stale proposal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from edge_agent.actions.types import Proposal
from edge_agent.domain import SCHEMA_VERSION

STATE_MAX_CHARS = 255


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
