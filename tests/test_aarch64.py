"""Every runtime dependency ships a manylinux aarch64 wheel (Raspberry Pi, Jetson) for 3.11-3.13."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGE_AGENT_CACHE", Path.home() / ".cache" / "edge-agent"))
# manylinux2014 (glibc 2.17) alone is not enough: onnxruntime >= 1.20 ships aarch64 wheels
# tagged manylinux_2_27/2_28 only. The oldest glibc we target is JetPack 5's (Ubuntu 20.04,
# 2.31); Raspberry Pi OS bookworm has 2.36 and JetPack 6 2.35.
PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{m}_aarch64" for m in range(17, 32))]


def runtime_dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_runtime_deps_have_aarch64_wheels(python: str) -> None:
    deps = runtime_dependencies()
    assert any(d.startswith("onnxruntime") for d in deps)
    dest = CACHE / f"aarch64-wheels-cp{python.replace('.', '')}"
    # --only-binary + --platform: pip may take nothing but a prebuilt wheel for that
    # platform, so a dependency that would need compiling on the Pi fails here. The wheels
    # stay in the cache folder, and pip reuses them on the next run.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", *(a for p in PLATFORMS for a in ("--platform", p)),
         "--python-version", python, "--dest", str(dest), *deps],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    names = {p.name.split("-")[0].lower() for p in dest.glob("*.whl")}
    for dep in deps:
        name = dep.split(">")[0].split("<")[0].split("=")[0].replace("-", "_").lower()
        assert name in names, (name, sorted(names))
    onnx = [p.name for p in dest.glob("onnxruntime-*.whl")]
    assert onnx, "no onnxruntime wheel"
    assert all("aarch64" in n for n in onnx), onnx
