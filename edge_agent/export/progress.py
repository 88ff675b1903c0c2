"""Progress for long export steps: tqdm bars on a terminal, structlog step lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")


def interactive() -> bool:
    """True when stderr is a terminal (bars would otherwise litter logs and CI output)."""
    return sys.stderr.isatty()


class Steps:
    """Numbered ``export_step`` log lines, echoed to a terminal as ``[n/total] what``."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self._total = total
        self._enabled = enabled
        self._n = 0
        self._started = time.monotonic()

    def __call__(self, what: str) -> None:
        """Start the next step."""
        self._n += 1
        elapsed = round(time.monotonic() - self._started, 1)
        log.info("export_step", step=self._n, of=self._total, what=what, elapsed_s=elapsed)
        if self._enabled and interactive():
            print(f"[{self._n}/{self._total}] {what}", file=sys.stderr, flush=True)


def track(items: Iterable[T], *, total: int, desc: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a tqdm bar when stderr is a terminal, silently otherwise."""
    if enabled and interactive():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            yield from tqdm(items, total=total, desc=desc, unit="tensor", leave=False)
            return
    yield from items
