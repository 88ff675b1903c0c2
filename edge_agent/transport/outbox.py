"""A disk outbox (SQLite) for our own publishes while the broker is unreachable.

Entries are kept in insertion order and deleted only once the broker has confirmed
them, so a crash during a flush re-sends rather than loses (at-least-once). The
outbox is bounded by count (the oldest entry goes) and by age (stale entries are not
worth sending); both drops are logged and counted.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge_agent.errors import TransportError

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    created REAL NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    correlation_data BLOB,
    expiry_s INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_client ON outbox (client_id, id);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One publish waiting for the broker; ``id`` grows with insertion order."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    correlation_data: bytes | None = None
    expiry_s: int | None = None
    created: float = 0.0
    id: int = 0


class Outbox:
    """An ordered, bounded, crash-safe queue of publishes in one SQLite file.

    Thread-safe: the asyncio thread appends, paho's thread removes confirmed entries.
    Rows are scoped by ``client_id`` so two agents sharing a state directory never
    send each other's messages.
    """

    def __init__(
        self,
        path: Path | str,
        client_id: str,
        *,
        max_messages: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._max_messages = max_messages
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self.dropped_full = 0
        self.dropped_age = 0
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we commit each statement ourselves (autocommit).
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: an entry appended during an outage must survive a power cut too;
            # appends only happen while disconnected, so the fsync cost is rare.
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)
            (size,) = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE client_id = ?", (client_id,)
            ).fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise TransportError(
                f"cannot open the MQTT outbox at {path}: {exc}; set mqtt.outbox_path to a "
                "writable file (under systemd, StateDirectory=edge-agent)"
            ) from exc
        self._db = db
        self._size: int = size

    @property
    def size(self) -> int:
        """Entries waiting (including those sent but not yet confirmed)."""
        return self._size

    @property
    def dropped_total(self) -> int:
        """Entries dropped unsent because the outbox was full or they were too old."""
        return self.dropped_full + self.dropped_age

    def append(self, entry: OutboxEntry) -> int:
        """Store ``entry`` at the end; drop the oldest if over ``max_messages``."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (client_id, created, topic, payload, qos, retain, "
                "correlation_data, expiry_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self._client_id,
                    self._clock(),
                    entry.topic,
                    entry.payload,
                    entry.qos,
                    int(entry.retain),
                    entry.correlation_data,
                    entry.expiry_s,
                ),
            )
            self._size += 1
            over = self._size - self._max_messages
            if over > 0:
                self._delete_oldest(over)
            return int(cur.lastrowid or 0)

    def pending(self, after_id: int = 0, limit: int = 500) -> list[OutboxEntry]:
        """Entries with ``id > after_id`` in order, after dropping those past max age."""
        with self._lock:
            self._drop_aged()
            rows = self._db.execute(
                "SELECT id, created, topic, payload, qos, retain, correlation_data, expiry_s "
                "FROM outbox WHERE client_id = ? AND id > ? ORDER BY id LIMIT ?",
                (self._client_id, after_id, limit),
            ).fetchall()
        return [
            OutboxEntry(
                id=row[0],
                created=row[1],
                topic=row[2],
                payload=bytes(row[3]),
                qos=row[4],
                retain=bool(row[5]),
                correlation_data=None if row[6] is None else bytes(row[6]),
                expiry_s=row[7],
            )
            for row in rows
        ]

    def remove(self, entry_id: int) -> None:
        """Forget a confirmed entry; unknown ids (already evicted) are ignored."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM outbox WHERE client_id = ? AND id = ?", (self._client_id, entry_id)
            )
            self._size -= cur.rowcount

    def remove_many(self, entry_ids: list[int]) -> None:
        """Forget confirmed entries in one transaction (one fsync)."""
        with self._lock:
            self._db.execute("BEGIN")
            removed = 0
            for entry_id in entry_ids:
                cur = self._db.execute(
                    "DELETE FROM outbox WHERE client_id = ? AND id = ?",
                    (self._client_id, entry_id),
                )
                removed += cur.rowcount
            self._db.execute("COMMIT")
            self._size -= removed

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    def _delete_oldest(self, count: int) -> None:
        cur = self._db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE client_id = ? "
            "ORDER BY id LIMIT ?)",
            (self._client_id, count),
        )
        self._size -= cur.rowcount
        self.dropped_full += cur.rowcount
        log.warning(
            "outbox_full_dropped_oldest",
            dropped=cur.rowcount,
            max_messages=self._max_messages,
            dropped_total=self.dropped_total,
        )

    def _drop_aged(self) -> None:
        cur = self._db.execute(
            "DELETE FROM outbox WHERE client_id = ? AND created < ?",
            (self._client_id, self._clock() - self._max_age_s),
        )
        if cur.rowcount > 0:
            self._size -= cur.rowcount
            self.dropped_age += cur.rowcount
            log.warning(
                "outbox_aged_dropped",
                dropped=cur.rowcount,
                max_age_s=self._max_age_s,
                dropped_total=self.dropped_total,
            )
