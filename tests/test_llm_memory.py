"""Dropping spent weight pages loses no data and no written page (Linux only)."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.llm.memory import (
    PageShedder,
    drop_mapped_pages,
    resident_file_bytes,
    shedding_mapped_pages,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="page residency is read from Linux /proc"
)

_SIZE = 16 << 20
_PAGE = mmap.PAGESIZE


def _weights(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(0).integers(0, 256, _SIZE, dtype=np.uint8)
    path = tmp_path / "model.onnx.data"
    path.write_bytes(data.tobytes())
    return path, data


def _map(path: Path) -> tuple[mmap.mmap, np.ndarray]:
    """Private and writable, as onnxruntime maps external data."""
    with path.open("r+b") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    return mapped, np.frombuffer(mapped, dtype=np.uint8)


def test_dropped_pages_leave_the_resident_set_and_read_back_unchanged(tmp_path: Path) -> None:
    path, data = _weights(tmp_path)
    mapped, view = _map(path)
    assert int(view[::_PAGE].sum()) == int(data[::_PAGE].sum())  # touch every page
    before = resident_file_bytes()

    dropped = drop_mapped_pages([path])

    assert dropped >= _SIZE // 2
    assert resident_file_bytes() <= before - _SIZE // 2
    assert np.array_equal(view, data)
    del view
    mapped.close()


def test_a_mapping_with_a_written_page_is_left_alone(tmp_path: Path) -> None:
    path, data = _weights(tmp_path)
    mapped, view = _map(path)
    changed = (int(data[0]) + 1) % 256
    mapped[0] = changed  # a private copy of the first page

    drop_mapped_pages([path])

    assert view[0] == changed
    assert np.array_equal(view[1:], data[1:])
    del view
    mapped.close()


def test_pages_shed_during_a_load_read_back_unchanged(tmp_path: Path) -> None:
    path, data = _weights(tmp_path)
    with shedding_mapped_pages([path], every_s=0.001):
        mapped, view = _map(path)
        total = sum(int(view[start : start + _PAGE].sum()) for start in range(0, _SIZE, _PAGE))
    assert total == int(data.sum(dtype=np.int64))
    assert np.array_equal(view, data)
    del view
    mapped.close()


def test_other_files_are_untouched(tmp_path: Path) -> None:
    path, _ = _weights(tmp_path)
    assert drop_mapped_pages([tmp_path / "missing.data"]) == 0
    assert drop_mapped_pages([path]) == 0  # not mapped at all


def _touch(view: np.ndarray) -> int:
    return int(view[::_PAGE].sum())


def test_the_shedder_drops_pages_every_n_positions_and_they_read_back(tmp_path: Path) -> None:
    path, data = _weights(tmp_path)
    mapped, view = _map(path)
    shedder = PageShedder([path], every=64)  # regions are read once, here
    _touch(view)
    before = resident_file_bytes()

    shedder.fed(63)
    kept = resident_file_bytes()
    shedder.fed(1)

    assert kept >= before - _SIZE // 4  # not yet: 63 positions
    assert resident_file_bytes() <= before - _SIZE // 2
    assert np.array_equal(view, data)
    _touch(view)
    shedder.shed()  # again, on demand, from the regions read at construction
    assert resident_file_bytes() <= before - _SIZE // 2
    assert np.array_equal(view, data)
    del view
    mapped.close()


def test_the_shedder_leaves_a_mapping_with_a_written_page_alone(tmp_path: Path) -> None:
    path, data = _weights(tmp_path)
    mapped, view = _map(path)
    changed = (int(data[0]) + 1) % 256
    mapped[0] = changed
    shedder = PageShedder([path], every=1)

    shedder.fed(1)

    assert view[0] == changed
    assert np.array_equal(view[1:], data[1:])
    del view
    mapped.close()
