"""Finish a model folder: checksum and size every file and write ``manifest.json``."""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata
from pathlib import Path

import structlog

from edge_agent.errors import ExportError
from edge_agent.llm.manifest import MANIFEST_NAME, STAMP_NAME, Manifest, sha256_file

log = structlog.get_logger(__name__)

# Recorded so a folder says which toolchain produced it.
_TOOLS = (
    "edge-agent",
    "torch",
    "transformers",
    "optimum-onnx",
    "onnx",
    "onnx-ir",
    "onnxruntime",
    "tokenizers",
    "gguf",
)


def tool_versions() -> dict[str, str]:
    """Installed versions of the export toolchain (``missing`` when not installed)."""
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def ensure_new_folder(target: Path) -> None:
    """Refuse to export into a folder that already has files (nothing is overwritten)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(f"{target} exists and is not empty; choose a new --out folder")


def write_manifest(folder: Path, draft: Manifest) -> Manifest:
    """Checksum and size every file in ``folder`` into ``draft.files`` and ``draft.sizes``
    and write the manifest."""
    paths = [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in (MANIFEST_NAME, STAMP_NAME)
    ]
    files = {path.relative_to(folder).as_posix(): sha256_file(path) for path in paths}
    sizes = {path.relative_to(folder).as_posix(): path.stat().st_size for path in paths}
    manifest = replace(draft, files=files, sizes=sizes, tools=tool_versions())
    (folder / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    log.info("manifest_written", path=str(folder), files=len(files))
    return manifest
