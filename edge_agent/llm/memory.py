"""Keeping the resident set to what generation touches: freed heap and spent weight pages.

On a 4 GB board the model's resident set decides whether Home Assistant and the
broker keep their memory. Two things inflate it after a load, both Linux/glibc
specifics, so both helpers are no-ops elsewhere:

- glibc keeps freed heap pages (the tokenizer's parse garbage) mapped;
- onnxruntime memory-maps the external weights, then prepacks each int4 MatMul into
  its own heap buffer. The mapped pages it read to do so (every scale, and the whole
  tied head, which stays mapped because the embedding's lookup reads it) stay
  resident though decoding reads only the looked-up rows of the head. Each lookup
  then maps back more than its row: the kernel maps the whole page-cache folio
  around a faulting address (256 KiB here, measured), so a 2,000-token prompt of
  scattered ids maps back ~150 MB of the head unless it is shed as it goes
  (:class:`PageShedder`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

_MADV_DONTNEED = 4  # Linux, every architecture we ship for
_MADV_PAGEOUT = 21  # Linux 5.4+


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def release_freed_heap() -> None:
    """Hand freed heap pages back to the OS (glibc only; a no-op elsewhere).

    Parsing a large ``tokenizer.json`` (Gemma 3: 33 MB, 262k tokens) peaks ~300 MB
    above what the tokenizer keeps, and glibc holds on to the freed pages; without
    this they count in the resident set for the life of the process.
    """
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def resident_file_bytes() -> int:
    """This process's resident file-backed pages (``RssFile``), or 0 where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def drop_mapped_pages(files: Iterable[Path]) -> int:
    """Drop this process's resident, unmodified pages of mappings of ``files``.

    onnxruntime maps external data private and writable. A region with no private
    (copy-on-write) page holds only clean file pages, and a dropped one is read back
    from the file on its next touch, so only what is still used returns; a region
    with private pages is skipped, since dropping would discard them. The files must
    not change underneath (model folders are written once, then verified).
    Returns how many resident bytes went.
    """
    libc = _libc()
    if libc is None:
        return 0
    before = resident_file_bytes()
    _advise(libc, _clean_regions(_targets(files)), _MADV_DONTNEED)
    return max(0, before - resident_file_bytes())


@contextlib.contextmanager
def shedding_mapped_pages(files: Iterable[Path], *, every_s: float = 0.05) -> Iterator[None]:
    """Page out what is resident of mappings of ``files`` every ``every_s`` meanwhile.

    Session creation prepacks one weight after another, each read once; shedding
    what was read as it goes keeps those pages out of the load's peak, not only out
    of the resident set after it.
    """
    libc = _libc()
    if libc is None:
        yield
        return
    targets = _targets(files)
    done = threading.Event()

    def shed() -> None:
        # PAGEOUT, not DONTNEED: a region can be unmapped and its addresses reused by
        # an allocation between reading the maps and advising, and PAGEOUT never
        # loses data (anonymous pages go to swap or stay). EINVAL means a kernel
        # before 5.4, with nothing to shed with.
        while not done.wait(every_s):
            if _advise(libc, _regions(targets), _MADV_PAGEOUT) == errno.EINVAL:
                return

    worker = threading.Thread(target=shed, name="shed-weight-pages", daemon=True)
    worker.start()
    try:
        yield
    finally:
        done.set()
        worker.join()


def _targets(files: Iterable[Path]) -> set[str]:
    """The paths as ``/proc/self/maps`` spells them (symlinks resolved)."""
    return {str(path.resolve()) for path in files}


def _advise(libc: ctypes.CDLL, regions: list[tuple[int, int]], advice: int) -> int:
    """``madvise`` each region; EINVAL at the first refusal of ``advice``, else 0.

    Other failures (ENOMEM: unmapped meanwhile) are what shedding wants anyway.
    """
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for low, high in regions:
        if madvise(low, high - low, advice) != 0 and ctypes.get_errno() == errno.EINVAL:
            return errno.EINVAL
    return 0


def _span(field: str) -> tuple[int, int]:
    """``"start-end"`` in hex, as a region header gives it."""
    low, high = field.split("-")
    return int(low, 16), int(high, 16)


def _regions(targets: set[str]) -> list[tuple[int, int]]:
    """Address ranges mapping one of ``targets``, from ``/proc/self/maps``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            headers = [line.split(maxsplit=5) for line in maps]
    except OSError:
        return []
    return [
        _span(fields[0])
        for fields in headers
        if len(fields) == 6 and fields[5].rstrip("\n") in targets
    ]


def _clean_regions(targets: set[str]) -> list[tuple[int, int]]:
    """Address ranges mapping one of ``targets`` with no private pages, from smaps."""
    regions: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
            for line in smaps:
                head = line.split(maxsplit=5)
                if ":" not in head[0]:
                    # A region header: "start-end perms offset dev inode [path]".
                    path = head[5].rstrip("\n") if len(head) == 6 else ""
                    current = _span(head[0]) if path in targets else None
                elif current is not None and head[0] == "Anonymous:":
                    if head[1] == "0":
                        regions.append(current)
                    current = None
    except OSError:
        return []
    return regions


class PageShedder:
    """Drops the resident pages of the mapped weight files every ``every`` positions.

    The regions are read once, right after the session is created: onnxruntime keeps
    its mappings for the session's life, so they stay valid and need no costly
    ``/proc/self/smaps`` walk per call (that walk costs ~0.2 s with a 2 GB heap).
    Only regions without private pages are kept, and nothing writes to weights
    afterwards, so dropping loses nothing: a dropped page is read back (from the
    page cache, normally) on its next touch. The shedder must not outlive the
    session that made the mappings.
    """

    def __init__(self, files: Iterable[Path], *, every: int) -> None:
        self._libc = _libc()
        self._regions = _clean_regions(_targets(files)) if self._libc is not None else []
        self._every = every
        self._fed = 0

    def fed(self, positions: int) -> None:
        """Count ``positions`` run through the model; shed when ``every`` have been."""
        self._fed += positions
        if self._fed >= self._every:
            self.shed()

    def shed(self) -> None:
        """Drop what is resident of the weight mappings now."""
        self._fed = 0
        if self._libc is not None and self._regions:
            _advise(self._libc, self._regions, _MADV_DONTNEED)
