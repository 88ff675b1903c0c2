"""The disk outbox: order, bounds by size and age, and at-least-once across a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.errors import TransportError
from edge_agent.transport.outbox import Outbox, OutboxEntry


class Clock:
    """A settable clock for age checks."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(n: int, **kw: object) -> OutboxEntry:
    return OutboxEntry(topic=f"t/{n}", payload=f"p{n}".encode(), qos=1, **kw)  # type: ignore[arg-type]


def open_outbox(path: Path, clock: Clock | None = None, **kw: float) -> Outbox:
    return Outbox(
        path,
        "client-a",
        max_messages=int(kw.get("max_messages", 100)),
        max_age_s=kw.get("max_age_s", 3600.0),
        clock=clock or Clock(),
    )


def test_entries_come_back_in_order_with_their_properties(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.sqlite")
    box.append(entry(1, retain=True, correlation_data=b"\x00c", expiry_s=30))
    for n in (2, 3):
        box.append(entry(n))
    got = box.pending()
    assert [e.topic for e in got] == ["t/1", "t/2", "t/3"]
    assert (got[0].retain, got[0].correlation_data, got[0].expiry_s) == (True, b"\x00c", 30)
    assert (got[1].retain, got[1].correlation_data, got[1].expiry_s) == (False, None, None)
    assert [e.topic for e in box.pending(after_id=got[0].id)] == ["t/2", "t/3"]
    box.remove(got[1].id)
    box.remove_many([got[0].id, 12345])  # unknown ids are ignored
    assert [e.topic for e in box.pending()] == ["t/3"]
    assert box.size == 1


def test_a_full_outbox_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.sqlite", max_messages=3)
    for n in range(1, 6):
        box.append(entry(n))
    assert [e.topic for e in box.pending()] == ["t/3", "t/4", "t/5"]
    assert (box.size, box.dropped_full, box.dropped_total) == (3, 2, 2)


def test_entries_older_than_max_age_are_dropped_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    box = open_outbox(tmp_path / "o.sqlite", clock, max_age_s=100)
    box.append(entry(1))
    clock.now += 60
    box.append(entry(2))
    clock.now += 50  # entry 1 is 110 s old, entry 2 50 s
    assert [e.topic for e in box.pending()] == ["t/2"]
    assert (box.size, box.dropped_age, box.dropped_total) == (1, 1, 1)


def test_rows_are_scoped_by_client_id(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    mine = open_outbox(path)
    other = Outbox(path, "client-b", max_messages=10, max_age_s=3600, clock=Clock())
    mine.append(entry(1))
    other.append(entry(2))
    assert [e.topic for e in mine.pending()] == ["t/1"]
    assert [e.topic for e in other.pending()] == ["t/2"]


_CRASH = """
import os, signal, sys
from edge_agent.transport.outbox import Outbox, OutboxEntry
box = Outbox(sys.argv[1], "client-a", max_messages=100, max_age_s=3600)
for n in range(1, 4):
    box.append(OutboxEntry(topic=f"t/{n}", payload=b"x", qos=1))
handed = box.pending()      # "sent" to paho ...
box.remove(handed[0].id)    # ... only t/1 was confirmed before the crash
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_unconfirmed_entries_survive_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(path)], timeout=60, check=False)
    assert proc.returncode == -9
    box = open_outbox(path)
    assert [e.topic for e in box.pending()] == ["t/2", "t/3"]  # re-sent, not lost
    assert box.size == 2


def test_an_unwritable_outbox_is_a_clear_transport_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TransportError, match=r"mqtt\.outbox_path"):
        open_outbox(blocker / "sub" / "o.sqlite")
