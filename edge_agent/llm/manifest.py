"""``manifest.json``: what a model folder holds, how to prompt it, its checksums and sizes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast

from edge_agent.errors import ModelError, ModelVerifyError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
STAMP_NAME = ".verified"
# The runtime cannot work without these, so a manifest that does not vouch for them is refused.
REQUIRED_FILES = ("model.onnx", "tokenizer.json")
PromptFormat = Literal["chat", "completion"]
_FORMATS = ("chat", "completion")
REBUILD_HINT = "re-run `edge-agent model build-tiny` or re-export the model into a fresh folder"


@dataclass(frozen=True, slots=True)
class Quantization:
    """How the weights were quantized (``method`` ``none`` for a float export)."""

    method: str
    bits: int
    block_size: int
    accuracy_level: int
    symmetric: bool
    head_bits: int | None = None
    """Bits of the LM head when it differs from the body (``None``: same as ``bits``)."""
    shared_embedding: bool = False
    """True when the token embedding reads the LM head's quantized blocks (stored once)."""
    int8_matmuls: int = 0
    """MatMuls kept at 8 bits (e.g. where the source already stored 5+ bits)."""
    head_int8_rows: int = 0
    """Rows of a 4-bit head (its first, most frequent tokens) stored at 8 bits."""
    rounding: str = "nearest"
    """How int4 scales were chosen: ``nearest`` (block peak), ``search`` (least squared
    error), or ``calibrated`` (error weighted by calibration activations)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """The contents of a model folder's ``manifest.json``; it owns its JSON codec."""

    family: str
    source: str
    revision: str
    context_length: int
    bos_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    prompt_template: str
    """A ``str.format`` template with one ``{user}`` placeholder."""
    quantization: Quantization
    files: dict[str, str]
    """Relative file name -> sha256 hex digest, for every file the model needs."""
    stop_strings: tuple[str, ...] = ()
    """Plain-text stops matched on decoded text; special-token stops go in eos_token_ids."""
    prompt_format: PromptFormat = "chat"
    tools: dict[str, str] = field(default_factory=dict)
    num_layers: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    graph: str | None = None
    """How the graph was made: ``fused`` (contrib ops, written directly) or ``optimum``
    (traced); ``None`` in folders from before the field existed."""
    verify_positions: int = 1
    """Positions the LM head scores per forward pass (``export/graph_options.py``): above
    1, the runtime can verify drafted tokens in one pass. Folders from before: 1."""
    kv_dtype: str = "float32"
    """Element type of the KV cache (``float16`` halves its memory)."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Relative file name -> size in bytes, beside ``files``: a truncated copy is caught by
    a ``stat``, without hashing. Empty in folders from before sizes were recorded."""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, text: str, *, origin: str = MANIFEST_NAME) -> Manifest:
        """Parse manifest JSON; ``origin`` names the file in error messages."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("top level is not an object")
            version = int(raw.get("schema_version", 0))
            if version != SCHEMA_VERSION:
                raise ModelError(
                    f"{origin} has schema_version {version}; this edge-agent reads "
                    f"{SCHEMA_VERSION}. Upgrade edge-agent or re-export the model."
                )
            quant = raw["quantization"]
            manifest = cls(
                family=str(raw["family"]),
                source=str(raw["source"]),
                revision=str(raw["revision"]),
                context_length=int(raw["context_length"]),
                bos_token_id=int(raw["bos_token_id"]),
                eos_token_ids=tuple(int(i) for i in raw["eos_token_ids"]),
                pad_token_id=int(raw["pad_token_id"]),
                prompt_template=str(raw["prompt_template"]),
                quantization=Quantization(
                    method=str(quant["method"]),
                    bits=int(quant["bits"]),
                    block_size=int(quant["block_size"]),
                    accuracy_level=int(quant["accuracy_level"]),
                    symmetric=bool(quant["symmetric"]),
                    head_bits=_opt_int(quant.get("head_bits")),
                    shared_embedding=bool(quant.get("shared_embedding", False)),
                    int8_matmuls=int(quant.get("int8_matmuls", 0)),
                    head_int8_rows=int(quant.get("head_int8_rows", 0)),
                    rounding=str(quant.get("rounding", "nearest")),
                ),
                files={str(k): str(v) for k, v in raw["files"].items()},
                stop_strings=tuple(str(s) for s in raw.get("stop_strings", ())),
                prompt_format=_prompt_format(raw.get("prompt_format", "chat")),
                tools={str(k): str(v) for k, v in raw.get("tools", {}).items()},
                num_layers=_opt_int(raw.get("num_layers")),
                num_kv_heads=_opt_int(raw.get("num_kv_heads")),
                head_dim=_opt_int(raw.get("head_dim")),
                graph=_opt_str(raw.get("graph")),
                verify_positions=int(raw.get("verify_positions", 1)),
                kv_dtype=str(raw.get("kv_dtype", "float32")),
                sizes={str(k): int(v) for k, v in raw.get("sizes", {}).items()},
                schema_version=version,
            )
        except ModelError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelError(f"{origin} is invalid ({exc!r}); {REBUILD_HINT}") from exc
        manifest._check_template(origin)
        return manifest

    @classmethod
    def from_dir(cls, model_dir: Path) -> Manifest:
        """Read ``manifest.json`` from a model folder."""
        if not model_dir.is_dir():
            raise ModelError(
                f"model folder {model_dir} does not exist; set model.path to a folder with "
                f"model.onnx, tokenizer.json and {MANIFEST_NAME} ({REBUILD_HINT})"
            )
        path = model_dir / MANIFEST_NAME
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ModelError(
                f"{path} is missing: {model_dir} is not an edge-agent model folder; {REBUILD_HINT}"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"cannot read {path}: {exc}") from exc
        return cls.from_json(text, origin=str(path))

    def to_json(self) -> str:
        """The manifest as pretty, key-sorted JSON (stable bytes for the same content)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @property
    def files_digest(self) -> str:
        """A short hash over every file's checksum: changes whenever any file does."""
        canonical = json.dumps(self.files, sort_keys=True).encode("utf-8")
        return hashlib.sha256(canonical).hexdigest()[:12]

    @property
    def label(self) -> str:
        """A short name for people: "Gemma 3 270M int8/int4" (family, size, weights)."""
        family = re.sub(r"^([a-z]+)(\d+)$", r"\1 \2", self.family).capitalize()
        size = re.search(r"(?<![\w.])(\d+(?:\.\d+)?)([mb])(?![a-z])", self.source.lower())
        q = self.quantization
        if q.method == "none":
            weights = "fp32"
        elif q.head_bits is not None and q.head_bits != q.bits:
            weights = f"int{q.bits}/int{q.head_bits}"
        else:
            weights = f"int{q.bits}"
        parts = [family, f"{size.group(1)}{size.group(2).upper()}" if size else "", weights]
        return " ".join(p for p in parts if p)

    def render(self, user: str) -> str:
        """Apply the prompt template to ``user`` text."""
        # format_map over a single key: braces inside ``user`` are data, never fields.
        return self.prompt_template.format_map({"user": user})

    def verify_files(self, model_dir: Path) -> None:
        """Check that every listed file exists and has its recorded sha256."""
        for name in REQUIRED_FILES:
            if name not in self.files:
                raise ModelVerifyError(
                    f"{model_dir / MANIFEST_NAME} does not list {name}; {REBUILD_HINT}"
                )
        for name, expected in sorted(self.files.items()):
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts:
                raise ModelVerifyError(f"{MANIFEST_NAME} lists {name!r} outside the folder")
            path = model_dir / rel
            if not path.is_file():
                raise ModelVerifyError(
                    f"{name} is listed in {MANIFEST_NAME} but missing from {model_dir}; "
                    f"{REBUILD_HINT}"
                )
            wrong = self.size_problem(name, path.stat().st_size)
            if wrong is not None:  # a stat says it before a multi-GB hash would
                raise ModelVerifyError(f"{wrong} in {model_dir}; {REBUILD_HINT}")
            actual = sha256_file(path)
            if actual != expected:
                raise ModelVerifyError(
                    f"{name} in {model_dir} failed its checksum (sha256 {actual[:12]}..., "
                    f"manifest says {expected[:12]}...): the file is truncated, corrupt or "
                    f"was changed; {REBUILD_HINT}"
                )

    def size_problem(self, name: str, actual: int) -> str | None:
        """Why file ``name`` of ``actual`` bytes does not match its recorded size, or None
        (also when the manifest records no size for it: a folder from before sizes)."""
        expected = self.sizes.get(name)
        if expected is None or expected == actual:
            return None
        how = (
            "truncated (a copy or download that stopped early?)"
            if actual < expected
            else "larger than recorded"
        )
        return f"{name} is {actual} bytes, manifest says {expected}: {how}"

    def _check_template(self, origin: str) -> None:
        sentinel = "\x00user\x00"
        problem = (
            f"{origin}: prompt_template must be a format string whose only placeholder is {{user}}"
        )
        try:
            rendered = self.render(sentinel)
        except (KeyError, IndexError, ValueError) as exc:
            raise ModelError(f"{problem} ({exc!r})") from exc
        if sentinel not in rendered:
            raise ModelError(f"{problem} (it has none)")


def verify(model_dir: Path, *, trust_stamp: bool = False) -> Manifest:
    """Read the folder's manifest and check every file against it; return the manifest.

    A full check leaves a stamp (``.verified``, best effort) of every file's inode,
    size, mtime and ctime. With ``trust_stamp`` a folder whose files still match the
    stamp skips re-hashing (~2 s per GB saved): any write to a file changes its ctime,
    which user space cannot set back, so corruption and edits are still caught.
    """
    manifest = Manifest.from_dir(model_dir)
    stamp = model_dir / STAMP_NAME
    key = _stat_key(model_dir, manifest)
    if trust_stamp and key is not None:
        try:
            if stamp.read_text(encoding="utf-8").strip() == key:
                return manifest
        except OSError:
            pass
    manifest.verify_files(model_dir)
    if key is not None:
        # A read-only folder gets no stamp: every load hashes, which is still correct.
        with contextlib.suppress(OSError):
            stamp.write_text(key + "\n", encoding="utf-8")
    return manifest


def _stat_key(model_dir: Path, manifest: Manifest) -> str | None:
    """A digest of the stat identity of the manifest and every listed file."""
    entries = []
    for name in sorted([MANIFEST_NAME, *manifest.files]):
        try:
            st = (model_dir / name).stat()
        except OSError:
            return None
        entries.append([name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    payload = json.dumps([manifest.files_digest, entries]).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


def check_family(manifest: Manifest, expected: str, model_dir: Path) -> None:
    """Refuse a folder whose manifest names another model family than ``expected``."""
    if manifest.family != expected:
        raise ModelVerifyError(
            f"{model_dir / MANIFEST_NAME} is a {manifest.family!r} model ({manifest.source}), "
            f"not {expected!r}; point model.path at a {expected} folder or re-export it"
        )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB weights never sit in memory."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ModelVerifyError(f"cannot read {path}: {exc}; {REBUILD_HINT}") from exc
    return digest.hexdigest()


def _prompt_format(value: Any) -> PromptFormat:
    if value not in _FORMATS:
        raise ValueError(f"prompt_format must be one of {_FORMATS}, not {value!r}")
    return cast(PromptFormat, value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
