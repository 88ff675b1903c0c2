"""Where the shared real data lives, from any checkout or worktree."""

from __future__ import annotations

import os
from pathlib import Path


def uci_occupancy() -> Path:
    """The UCI occupancy folder: $EDGE_AGENT_UCI_DIR, or ``shared/data/uci-occupancy`` in the
    nearest folder above the repository that has one (it may be absent: callers skip)."""
    override = os.environ.get("EDGE_AGENT_UCI_DIR")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data" / "uci-occupancy"
        if candidate.is_dir():
            return candidate
    return here.parents[3] / "shared" / "data" / "uci-occupancy"
