"""Build (once) and cache the tiny random-weight Gemma 2: torch, fp32 ONNX and int4 ONNX.

This module imports no torch: a cached build is found in milliseconds, and the heavy
build steps (``edge_agent.export.build``) load only when something must be built.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge_agent.export.recipe import TINY_GEMMA2, TinyGemma2Recipe
from edge_agent.llm.manifest import MANIFEST_NAME

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TinyModel:
    """Where one cached tiny build lives."""

    root: Path
    int4_dir: Path
    """The device folder: int4 ONNX, tokenizer, manifest."""
    fp32_dir: Path
    """The same export before quantization, for parity tests."""
    hf_dir: Path
    """The torch weights and config (``save_pretrained``), the parity reference."""

    @classmethod
    def at(cls, root: Path) -> TinyModel:
        """The layout of a build rooted at ``root``."""
        return cls(root, root / "int4", root / "fp32", root / "hf")

    def is_complete(self) -> bool:
        """True when every part of the build is in place."""
        folders = (self.int4_dir, self.fp32_dir)
        return (
            all((d / MANIFEST_NAME).is_file() for d in folders)
            and (self.hf_dir / "config.json").is_file()
        )


def default_cache_root() -> Path:
    """``$EDGE_AGENT_CACHE`` or ``~/.cache/edge-agent``, then ``models``."""
    base = os.environ.get("EDGE_AGENT_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "edge-agent") / "models"


def build_tiny_gemma2(
    cache_root: Path, *, progress: bool = True, recipe: TinyGemma2Recipe = TINY_GEMMA2
) -> TinyModel:
    """Return the cached build for ``recipe``, building it first if needed.

    The folder name carries the recipe hash, and a build is assembled in a temporary
    folder and renamed into place, so an interrupted build is never mistaken for done.
    Raises ``ImportError`` if a build is needed and the export extra is not installed.
    """
    target = TinyModel.at(cache_root / f"tiny-gemma2-{recipe.digest()}")
    if target.is_complete():
        log.debug("tiny_model_cached", path=str(target.root))
        return target
    # Deferred so that finding a cached build never pays for importing torch.
    from edge_agent.export.build import build_folders

    if target.root.exists():
        log.warning("tiny_model_incomplete_removed", path=str(target.root))
        shutil.rmtree(target.root)
    cache_root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    staging = TinyModel.at(Path(tempfile.mkdtemp(prefix=".tiny-gemma2-", dir=cache_root)))
    try:
        build_folders(
            recipe,
            hf_dir=staging.hf_dir,
            fp32_dir=staging.fp32_dir,
            int4_dir=staging.int4_dir,
            progress=progress,
        )
        _make_readable(staging.root)
        try:
            staging.root.rename(target.root)
        except OSError:
            # Another process finished the same build first; its result is identical.
            if not target.is_complete():
                raise
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
    log.info(
        "tiny_model_built", path=str(target.root), build_s=round(time.monotonic() - started, 2)
    )
    return target


def _make_readable(root: Path) -> None:
    """mkdtemp and some writers create owner-only modes; a model folder is shared data."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
