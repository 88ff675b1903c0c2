"""The open excursions on disk, so a restart neither re-announces one nor loses its start.

A small JSON file in the state directory, rewritten whole and atomically (a temporary file
in the same directory, fsync, rename, fsync of the directory): after a power cut it holds
the old state or the new one, never half of each. A file that cannot be read or parsed is
logged and treated as empty; the agent goes on, it only forgets what was open.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from edge_agent.domain import SCHEMA_VERSION
from edge_agent.excursions import OpenExcursion

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the file holds."""

    excursions: tuple[OpenExcursion, ...] = ()
    silenced: tuple[str, ...] = ()
    """Excursions whose start the rate limit suppressed (their resolution is too)."""

    def to_payload(self) -> bytes:
        """The versioned JSON document written to disk."""
        doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "excursions": [e.to_dict() for e in self.excursions],
            "silenced": sorted(self.silenced),
        }
        return json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=1).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> AlertState:
        """Decode; raises ValueError naming what is wrong."""
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("excursions"), list):
            raise ValueError('expected {"excursions": [...], "silenced": [...]}')
        records = []
        for i, item in enumerate(doc["excursions"]):
            try:
                records.append(OpenExcursion.from_dict(item))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"excursions[{i}]: {exc!r}") from exc
        silenced = doc.get("silenced") or []
        return cls(tuple(records), tuple(str(s) for s in silenced))


class AlertStateFile:
    """Loads and atomically saves :class:`AlertState` at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False

    def load(self) -> AlertState:
        """The saved state; empty when there is none or it is unreadable (logged)."""
        try:
            payload = self.path.read_bytes()
        except FileNotFoundError:
            return AlertState()
        except OSError as exc:
            log.warning("alert_state_unreadable", path=str(self.path), error=exc.strerror)
            return AlertState()
        try:
            state = AlertState.from_payload(payload)
        except ValueError as exc:
            log.warning("alert_state_invalid", path=str(self.path), error=str(exc))
            return AlertState()
        log.info("alert_state_loaded", path=str(self.path), open=len(state.excursions))
        return state

    def save(self, state: AlertState) -> bool:
        """Replace the file with ``state``; False (logged once) when it cannot be written."""
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(state.to_payload())
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_dir(directory)
        except OSError as exc:
            if not self._warned:
                # Alerts still work; only a restart would forget what is open. Say it once.
                log.error("alert_state_unwritable", path=str(self.path), error=exc.strerror)
                self._warned = True
            return False
        self._warned = False
        return True


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
