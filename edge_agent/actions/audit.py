"""The audit log: every proposal and decision, with the facts, model and prompt behind it.

One SQLite table, one row per step of a proposal's life (``proposed``, ``performed``,
``rejected``, ``expired``, ``failed``, or ``no_action`` when the model chose none). The
first row of a proposal carries the facts it was based on and the model's raw output.
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
    payload TEXT
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
]


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
        )
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
