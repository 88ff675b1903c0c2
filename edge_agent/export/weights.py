"""Where export weights come from, one tensor at a time, so a 2B model never sits in RAM whole."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_agent.errors import ExportError

_FLOATS = {"fp32": np.float32, "fp16": np.float16, "bf16": None}


class Weights(Protocol):
    """A named float tensor source (state-dict names, e.g. ``model.norm.weight``)."""

    def get(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32; raises ``KeyError`` if unknown."""
        ...


def round_to(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` (float32) rounded through ``dtype`` and back, as the source would hold it."""
    if dtype == "fp32":
        return array
    if dtype == "fp16":
        return array.astype(np.float16).astype(np.float32)
    if dtype == "bf16":
        # Round to nearest even on the upper 16 bits, as torch does.
        bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return rounded.astype(np.uint32).view(np.float32)
    raise ExportError(f"unknown dtype {dtype!r}; use one of {sorted(_FLOATS)}")


class ArrayWeights:
    """Weights already in memory (a small model's state dict)."""

    def __init__(self, arrays: Mapping[str, Any], dtype: str = "fp32") -> None:
        self._arrays = arrays
        self._dtype = dtype

    def get(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32."""
        value = self._arrays[name]
        if hasattr(value, "detach"):
            value = value.detach().float().numpy()
        return round_to(np.asarray(value, dtype=np.float32), self._dtype)


class SafetensorsWeights:
    """A Hugging Face folder's ``*.safetensors`` shards, read per tensor (bf16 via torch)."""

    def __init__(self, folder: Path, dtype: str = "fp32") -> None:
        self._folder = folder
        self._dtype = dtype
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self._files = {str(k): folder / str(v) for k, v in weight_map.items()}
        elif (folder / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
                self._files = {k: folder / "model.safetensors" for k in fh.keys()}  # noqa: SIM118
        else:
            raise ExportError(
                f"{folder} has no model.safetensors (or index); export needs safetensors "
                "weights (convert .bin checkpoints with transformers first)"
            )

    def get(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32, read from its shard."""
        from safetensors import safe_open

        path = self._files[name]
        with safe_open(str(path), framework="pt") as fh:
            tensor = fh.get_tensor(name)
        return round_to(tensor.float().numpy(), self._dtype)

    def digest(self) -> str:
        """A short hash of the folder's config and shard names/sizes (no full read)."""
        h = hashlib.sha256((self._folder / "config.json").read_bytes())
        for path in sorted(set(self._files.values())):
            h.update(f"{path.name}:{path.stat().st_size}".encode())
        return h.hexdigest()[:12]


class RandomWeights:
    """Seeded random weights generated per tensor: same name and seed, same values.

    Norm weights are zero (Gemma scales by ``1 + w``); everything else is normal with
    ``std``. Used for benchmark-shaped models where only speed and memory matter.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], seed: int, std: float) -> None:
        self._shapes = shapes
        self._seed = seed
        self._std = std

    def get(self, name: str) -> np.ndarray:
        """Tensor ``name``: zeros for norms, seeded normal noise for the rest."""
        shape = self._shapes[name]
        if name.endswith("norm.weight"):
            return np.zeros(shape, dtype=np.float32)
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        rng = np.random.default_rng([self._seed, key])
        out = rng.standard_normal(shape, dtype=np.float32)
        out *= self._std
        return out
