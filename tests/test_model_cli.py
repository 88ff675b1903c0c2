"""``edge-agent model verify|info``: failures name the file; the stamp stays honest."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from edge_agent.errors import ModelVerifyError
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.manifest import STAMP_NAME, verify
from tests.support.agent import run_cli


@pytest.fixture
def folder(tiny_model: TinyModel, tmp_path: Path) -> Path:
    """A private copy of the tiny int4 folder, safe to damage."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_model.int4_dir, copy)
    return copy


def test_verify_ok_prints_a_summary(folder: Path) -> None:
    done = run_cli("model", "verify", "--family", "gemma2", str(folder))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"OK {folder}")


def test_missing_file_is_named(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()
    done = run_cli("model", "verify", str(folder))
    assert done.returncode == 1
    assert "tokenizer.json is listed in manifest.json but missing" in done.stderr
    assert "re-export" in done.stderr


@pytest.mark.parametrize("damage", ["truncate", "tamper"])
def test_truncated_or_tampered_weights_fail_their_checksum(folder: Path, damage: str) -> None:
    data = folder / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    done = run_cli("model", "verify", str(folder))
    assert done.returncode == 1
    assert "model.onnx.data" in done.stderr
    assert "failed its checksum" in done.stderr


def test_wrong_family_is_refused(folder: Path) -> None:
    done = run_cli("model", "verify", "--family", "gemma3", str(folder))
    assert done.returncode == 1
    assert "is a 'gemma2' model" in done.stderr
    assert "not 'gemma3'" in done.stderr


def test_not_a_model_folder(tmp_path: Path) -> None:
    done = run_cli("model", "verify", str(tmp_path))
    assert done.returncode == 1
    assert "manifest.json is missing" in done.stderr


def test_info_lists_sizes_and_quantization(folder: Path) -> None:
    done = run_cli("model", "info", str(folder))
    assert done.returncode == 0, done.stderr
    assert "matmul_nbits 4-bit, block 32" in done.stdout
    assert "model.onnx.data" in done.stdout
    assert "MB" in done.stdout
    assert "files:    4 listed" in done.stdout


def test_stamp_skips_hashing_until_a_file_changes(folder: Path) -> None:
    verify(folder)  # full check writes the stamp
    assert (folder / STAMP_NAME).is_file()
    data = folder / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x01
    stat = data.stat()
    data.write_bytes(bytes(raw))
    # Put size and mtime back as a careless copy tool would; ctime still moves.
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelVerifyError, match="failed its checksum"):
        verify(folder, trust_stamp=True)


def test_stamp_is_trusted_when_nothing_changed(folder: Path) -> None:
    verify(folder)
    stamp = folder / STAMP_NAME
    before = stamp.stat().st_mtime_ns
    time.sleep(0.01)
    assert verify(folder, trust_stamp=True).family == "gemma2"
    # Only a full check rewrites the stamp, so an untouched stamp means no hashing ran.
    assert stamp.stat().st_mtime_ns == before
    verify(folder)
    assert stamp.stat().st_mtime_ns != before


@pytest.mark.parametrize(("flag", "match_source"), [((), True), (("--ignore-source-bits",), False)])
def test_export_options_map_to_the_quantization_spec(
    flag: tuple[str, ...], match_source: bool
) -> None:
    from edge_agent.cli import build_parser
    from edge_agent.cli.model_export import quant_spec

    args = build_parser().parse_args(
        ["model", "export", "m.gguf", "--out", "x", "--block-size", "64", "--asymmetric", *flag]
    )
    spec = quant_spec(args)
    assert (spec.block_size, spec.symmetric, spec.bits) == (64, False, 4)
    assert spec.match_source is match_source
