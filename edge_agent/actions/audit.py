"""The audit log: every proposal and decision, with the facts, model and prompt behind it.

One SQLite table, one row per step of a proposal's life (``proposed``, ``performed``,
``rejected``, ``expired``, ``failed``, or ``no_action`` when the model chose none). The
first row of a proposal carries the facts it was based on and the model's raw output.
A decision made by a message (approve, reject) records that message's ``origin``: its
topic, retain flag, ``by`` field, MQTT 5 user properties and correlation data. Messages
that decided nothing are rows too: ``approval_refused`` (with the reason as ``code``)
and ``ignored`` (a retained question). A proposal still ``proposed`` when the process
stopped is closed as ``expired`` (code ``restart``) by the next start.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.actions.types import ActionEvent
from edge_agent.domain import MetricFacts
from edge_agent.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS action_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    action_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    device TEXT NOT NULL,
    params TEXT NOT NULL,
    reason TEXT NOT NULL,
    mode TEXT NOT NULL,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    window_start REAL,
    window_end REAL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    facts TEXT,
    raw TEXT,
    topic TEXT,
    payload TEXT,
    origin TEXT
);
CREATE INDEX IF NOT EXISTS action_log_ts ON action_log (ts);
"""
_COLUMNS = [
    "seq",
    "ts",
    "action_id",
    "kind",
    "action",
    "device",
    "params",
    "reason",
    "mode",
    "code",
    "detail",
    "window_start",
    "window_end",
    "model",
    "prompt_version",
    "facts",
    "raw",
    "topic",
    "payload",
    "origin",
]
# Columns added after the first release, with their SQL type: added to an older file.
_ADDED = {"origin": "TEXT"}


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row of the log, as stored."""

    seq: int
    ts: float
    action_id: str
    kind: str
    action: str
    device: str
    params: dict[str, Any]
    reason: str
    mode: str
    code: str
    detail: str
    window_start: float | None
    window_end: float | None
    model: str
    prompt_version: str
    facts: list[dict[str, Any]] | None
    raw: str | None
    topic: str | None
    payload: str | None
    origin: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {name: getattr(self, name) for name in _COLUMNS}


class AuditLog:
    """Append-only SQLite log; small synchronous writes (a few per proposal)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> AuditLog:
        """Open (and create, unless ``readonly``) the log at ``path``."""
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            else:
                conn = sqlite3.connect(str(path), check_same_thread=False)
                conn.executescript(_SCHEMA)
                have = {r[1] for r in conn.execute("PRAGMA table_info(action_log)")}
                for name, kind in _ADDED.items():
                    if name not in have:
                        conn.execute(f"ALTER TABLE action_log ADD COLUMN {name} {kind}")
                conn.commit()
        except sqlite3.Error as exc:
            raise ConfigError(
                f"actions.audit_path {path} cannot be opened ({exc}); its directory "
                "must exist and be writable"
            ) from exc
        return cls(conn)

    def record(
        self,
        event: ActionEvent,
        *,
        kind: str | None = None,
        facts: Sequence[MetricFacts] | None = None,
        topic: str | None = None,
        payload: bytes | None = None,
        origin: dict[str, Any] | None = None,
    ) -> None:
        """Append one step; ``facts`` and the raw output go with the first step."""
        p = event.proposal
        row = (
            event.ts,
            p.id,
            kind or event.event_type,
            p.action,
            p.device,
            json.dumps(p.params, ensure_ascii=False),
            p.reason,
            event.mode,
            event.code,
            event.detail,
            p.window.start,
            p.window.end,
            p.model,
            p.prompt_version,
            None if facts is None else json.dumps([f.to_dict() for f in facts]),
            p.raw if facts is not None else None,
            topic,
            None if payload is None else payload.decode("utf-8", errors="replace"),
            None if origin is None else json.dumps(origin, ensure_ascii=False),
        )
        self._insert(row)

    def record_message(
        self,
        kind: str,
        ts: float,
        *,
        code: str,
        detail: str,
        origin: dict[str, Any],
        action_id: str = "",
        event: ActionEvent | None = None,
    ) -> None:
        """Append a message that decided nothing: a refused approval, an ignored question.

        ``event``, when the message named a known proposal, fills in what it was.
        """
        p = event.proposal if event is not None else None
        row = (
            ts,
            action_id or (p.id if p else ""),
            kind,
            p.action if p else "",
            p.device if p else "",
            json.dumps(p.params if p else {}, ensure_ascii=False),
            p.reason if p else "",
            event.mode if event else "",
            code,
            detail[:500],
            p.window.start if p else None,
            p.window.end if p else None,
            p.model if p else "",
            p.prompt_version if p else "",
            None,
            None,
            None,
            None,
            json.dumps(origin, ensure_ascii=False),
        )
        self._insert(row)

    def last_kind(self, action_id: str) -> str | None:
        """The last step of a proposal's life, refusals aside; None if never seen."""
        cur = self._conn.execute(
            "SELECT kind FROM action_log WHERE action_id = ? AND kind NOT IN "
            "('approval_refused', 'ignored') ORDER BY seq DESC LIMIT 1",
            (action_id,),
        )
        found = cur.fetchone()
        return None if found is None else str(found[0])

    def expire_orphans(self, now: float) -> list[str]:
        """Close every proposal whose last step is ``proposed``: pending at a stop.

        Its approval died with the process; the next start must not leave it open for
        ever, nor honour an approval for it. Returns the ids closed.
        """
        cur = self._conn.execute(
            "SELECT seq, action_id FROM action_log AS a WHERE kind = 'proposed' "
            "AND mode = 'confirm' AND NOT "
            "EXISTS (SELECT 1 FROM action_log AS b WHERE b.action_id = a.action_id AND "
            "b.seq > a.seq AND b.kind NOT IN ('approval_refused', 'ignored'))"
        )
        orphans = cur.fetchall()
        for seq, _ in orphans:
            self._conn.execute(
                f"INSERT INTO action_log ({', '.join(_COLUMNS[1:])}) "
                "SELECT ?, action_id, 'expired', action, device, params, reason, mode, "
                "'restart', 'pending when the service stopped', window_start, window_end, "
                "model, prompt_version, NULL, NULL, NULL, NULL, NULL "
                "FROM action_log WHERE seq = ?",
                (now, seq),
            )
        self._conn.commit()
        return [str(i) for _, i in orphans]

    def _insert(self, row: tuple[Any, ...]) -> None:
        self._conn.execute(
            f"INSERT INTO action_log ({', '.join(_COLUMNS[1:])}) "
            f"VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})",
            row,
        )
        self._conn.commit()

    def rows(self, since: float | None = None) -> list[AuditRow]:
        """Rows at or after ``since`` (all by default), oldest first."""
        cur = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM action_log WHERE ts >= ? ORDER BY seq",
            (since if since is not None else float("-inf"),),
        )
        out = []
        for r in cur.fetchall():
            data = dict(zip(_COLUMNS, r, strict=True))
            data["params"] = json.loads(data["params"])
            data["facts"] = None if data["facts"] is None else json.loads(data["facts"])
            data["origin"] = None if data["origin"] is None else json.loads(data["origin"])
            out.append(AuditRow(**data))
        return out

    def performed_since(self, since: float) -> list[tuple[str, str, float]]:
        """(action, device, ts) of every run since ``since``: restores rate limits."""
        cur = self._conn.execute(
            "SELECT action, device, ts FROM action_log WHERE kind = 'performed' AND ts >= ?",
            (since,),
        )
        return [(str(a), str(d), float(t)) for a, d, t in cur.fetchall()]

    def close(self) -> None:
        """Close the database."""
        self._conn.close()
