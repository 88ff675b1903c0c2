"""Resolve an export SOURCE (HF folder, hub id or ``.gguf`` file) into config, weights, tokens."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import structlog
from tokenizers import Tokenizer

from edge_agent.errors import ExportError
from edge_agent.export.gguf_file import GgufFile
from edge_agent.export.gguf_tokenizer import build_gguf_tokenizer, vocab_from_fields
from edge_agent.export.weights import ArrayWeights, SafetensorsWeights, Weights

log = structlog.get_logger(__name__)

# model_type -> manifest family; only these have been checked for parity.
FAMILIES = {"gemma2": "gemma2", "gemma3_text": "gemma3"}
_SENTINEL = "\x00user\x00"
BASE_STOPS = ("\n\n",)


@dataclass(frozen=True, slots=True)
class Prompting:
    """How the runtime prompts the model; goes into the manifest."""

    template: str
    format: str
    stop_strings: tuple[str, ...]


@dataclass(slots=True)
class ModelSource:
    """Everything the export needs from a source, weights still unread."""

    family: str
    source: str
    revision: str
    config: Any
    weights: Weights
    tokenizer: Tokenizer
    prompting: Prompting
    eos_token_ids: tuple[int, ...]
    tokenizer_files: dict[str, bytes] = field(default_factory=dict)
    """Extra files copied verbatim (``tokenizer_config.json``, chat template)."""
    high_precision: frozenset[str] = frozenset()
    """Weights the source stores with 5+ bits (GGUF types), for ``QuantSpec.match_source``."""
    int4_blocks: Callable[[str], tuple[np.ndarray, np.ndarray, np.ndarray] | None] | None = None
    """The source's own 4-bit blocks of a weight (``q``, ``scale``, ``minimum``), if any."""


def resolve(source: str, *, revision: str | None = None, dtype: str = "fp32") -> ModelSource:
    """A ``ModelSource`` for an HF folder, a ``.gguf`` file or a hub id (hub only if reachable)."""
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ExportError(f"{path} does not exist")
        return from_gguf(path, dtype=dtype)
    if path.is_dir():
        return from_hf_folder(path, source=source, revision=revision or "local", dtype=dtype)
    if path.exists() or source.startswith((".", "/", "~")):
        raise ExportError(f"{source} is neither a model folder nor a .gguf file")
    return from_hf_folder(
        _download(source, revision), source=source, revision=revision or "main", dtype=dtype
    )


def family_of(config: Any) -> str:
    """The manifest family for a transformers config, or a clear refusal."""
    family = FAMILIES.get(str(config.model_type))
    if family is None:
        raise ExportError(
            f"model type {config.model_type!r} is not supported; export handles "
            f"{', '.join(sorted(FAMILIES))} (Gemma 2 / Gemma 3 text)"
        )
    return family


def from_hf_folder(folder: Path, *, source: str, revision: str, dtype: str) -> ModelSource:
    """A local Hugging Face folder with ``config.json``, safetensors and ``tokenizer.json``."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder} has no usable config.json: {exc}") from exc
    family = family_of(config)
    weights = SafetensorsWeights(folder, dtype)
    if not (folder / "tokenizer.json").is_file():
        raise ExportError(f"{folder} has no tokenizer.json (export needs a fast tokenizer)")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    extra = {
        name: (folder / name).read_bytes()
        for name in ("tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
        if (folder / name).is_file()
    }
    prompting = _prompting_from_folder(folder, tokenizer)
    eos = _eos_ids(folder, config, tokenizer, prompting)
    if revision == "local":
        revision = f"local-{weights.digest()}"
    return ModelSource(family, source, revision, config, weights, tokenizer, prompting, eos, extra)


def from_gguf(path: Path, *, dtype: str = "fp32") -> ModelSource:
    """A GGUF file: config and dequantized weights through transformers' GGUF tables."""
    gguf = GgufFile(path)
    config = gguf_config(gguf)
    family = family_of(config)
    vocab = vocab_from_fields(gguf.fields, origin=str(path))
    tokenizer = build_gguf_tokenizer(vocab)
    bos = vocab.tokens[vocab.bos_id]
    # GGUF files carry no chat template we could trust across models: complete text.
    prompting = Prompting(f"{bos}{{user}}", "completion", BASE_STOPS)
    eos = tuple(i for i in (vocab.eos_id, vocab.id_of("<end_of_turn>")) if i is not None)
    tensors = _GgufTensors(gguf, config)
    weights = ArrayWeights(tensors, dtype)
    name = str(gguf.field("general.name", path.stem))
    revision = f"gguf-{_file_digest(path)}"
    return ModelSource(
        family,
        f"{name} ({path.name})",
        revision,
        config,
        weights,
        tokenizer,
        prompting,
        eos,
        high_precision=tensors.high_precision(),
        int4_blocks=tensors.int4_blocks,
    )


def gguf_config(gguf: GgufFile) -> Any:
    """A transformers config from GGUF metadata (the keys transformers' GGUF loader maps)."""
    from transformers import AutoConfig
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    arch = str(gguf.field("general.architecture"))
    mapping = cast("dict[str, str | None] | None", GGUF_CONFIG_MAPPING.get(arch))
    if mapping is None or arch not in ("gemma2", "gemma3"):
        raise ExportError(f"GGUF architecture {arch!r} is not supported (gemma2, gemma3)")
    kwargs: dict[str, Any] = {}
    for key, target in mapping.items():
        value = gguf.field(f"{arch}.{key}")
        if value is not None and target:
            kwargs[target] = value
    # llama.cpp writes Gemma 2's soft-caps, which transformers' table does not map; left
    # out, the config would silently fall back to 50/30.
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        value = gguf.field(f"{arch}.{key}")
        if value is not None:
            kwargs[key] = float(value)
    # GGUF has no query_pre_attn_scalar; llama.cpp scales by head_dim for every Gemma
    # size except the 27B models (hidden/heads), which are out of scope here.
    kwargs["query_pre_attn_scalar"] = kwargs.get("head_dim", 256)
    kwargs["vocab_size"] = len(gguf.field("tokenizer.ggml.tokens"))
    kwargs["tie_word_embeddings"] = "output.weight" not in gguf.tensors
    for name in ("bos", "eos", "padding"):
        value = gguf.field(f"tokenizer.ggml.{name}_token_id")
        if value is not None:
            kwargs[f"{'pad' if name == 'padding' else name}_token_id"] = int(value)
    model_type = "gemma3_text" if arch == "gemma3" else arch
    return AutoConfig.for_model(model_type, **kwargs)


class _GgufTensors(dict[str, Any]):
    """State-dict names -> dequantized GGUF tensors, computed on first access."""

    def __init__(self, gguf: GgufFile, config: Any) -> None:
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        self._names = {hf: g for g, hf in get_gguf_hf_weights_map(skeleton).items()}
        self._gguf = gguf

    def high_precision(self) -> frozenset[str]:
        """State-dict names of tensors stored as Q5+/Q6/Q8 or float in the file."""
        from gguf import GGMLQuantizationType

        def high(gguf_name: str) -> bool:
            kind = GGMLQuantizationType(self._gguf.tensors[gguf_name].qtype).name
            return kind.startswith(("Q5", "Q6", "Q8", "F", "BF", "IQ5", "IQ6"))

        return frozenset(hf for hf, g in self._names.items() if g in self._gguf.tensors and high(g))

    def int4_blocks(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The Q4_K blocks of weight ``name`` (state-dict name), or ``None``."""
        gguf_name = self._names.get(name)
        if gguf_name is None or gguf_name not in self._gguf.tensors:
            return None
        return self._gguf.q4k_blocks(gguf_name)

    def __missing__(self, name: str) -> Any:
        gguf_name = self._names.get(name)
        if gguf_name is None or gguf_name not in self._gguf.tensors:
            raise KeyError(name)
        array = self._gguf.array(gguf_name)
        # llama.cpp stores Gemma's RMSNorm gain as 1 + w; transformers wants w.
        return array - 1.0 if name.endswith("norm.weight") else array


def _prompting_from_folder(folder: Path, tokenizer: Tokenizer) -> Prompting:
    """Render the folder's chat template around a sentinel into a ``{user}`` template."""
    config_path = folder / "tokenizer_config.json"
    template_file = folder / "chat_template.jinja"
    has_template = template_file.is_file() or (
        config_path.is_file() and "chat_template" in json.loads(config_path.read_text("utf-8"))
    )
    bos = _special(config_path, "bos_token") or "<bos>"
    if not has_template:
        return Prompting(f"{bos}{{user}}", "completion", BASE_STOPS)
    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast.from_pretrained(folder)
    rendered = hf_tok.apply_chat_template(
        [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
    )
    if rendered.count(_SENTINEL) != 1:
        raise ExportError(f"{folder}: the chat template does not place the user message once")
    escaped = rendered.replace("{", "{{").replace("}", "}}")
    return Prompting(escaped.replace(_SENTINEL, "{user}"), "chat", ())


def _special(config_path: Path, key: str) -> str | None:
    if not config_path.is_file():
        return None
    value = json.loads(config_path.read_text("utf-8")).get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _eos_ids(
    folder: Path, config: Any, tokenizer: Tokenizer, prompting: Prompting
) -> tuple[int, ...]:
    ids: list[int] = []
    gen = folder / "generation_config.json"
    raw = json.loads(gen.read_text("utf-8")).get("eos_token_id") if gen.is_file() else None
    for value in (raw, config.eos_token_id):
        ids.extend(value if isinstance(value, list) else [] if value is None else [value])
    turn_end = tokenizer.token_to_id("<end_of_turn>")
    if prompting.format == "chat" and turn_end is not None:
        # Gemma's chat turns end with <end_of_turn>; older configs list only <eos>.
        ids.append(turn_end)
    return tuple(dict.fromkeys(int(i) for i in ids))


def _download(repo_id: str, revision: str | None) -> Path:
    """Fetch a hub snapshot (config, safetensors, tokenizer) or explain why not."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:
        raise ExportError("downloading from the hub needs huggingface_hub") from exc
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.jinja", "tokenizer.model"],
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ExportError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub "
            f"({exc.__class__.__name__}: {exc}); "
            "check the name, accept the model licence on its hub page and run "
            "`huggingface-cli login`, or pass a local folder"
        ) from exc
    return Path(path)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:12]
