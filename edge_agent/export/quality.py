"""int4 vs float quality: next-token top-1 agreement and mean KL over a fixed text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import structlog
from tokenizers import Tokenizer

from edge_agent.errors import ModelError
from edge_agent.llm.manifest import Manifest

log = structlog.get_logger(__name__)

# Logits of a 262k vocabulary are 1 MB per position; chunks bound the memory.
_CHUNK = 256
DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "models" / "quality" / "home-sensors.txt"


@dataclass(frozen=True, slots=True)
class QualityResult:
    """Agreement of the quantized model's next-token choice with the float model's."""

    tokens: int
    top1_agreement: float
    mean_kl: float
    max_kl: float

    def line(self) -> str:
        """A one-line summary for the CLI."""
        return (
            f"tokens={self.tokens} top1_agreement={self.top1_agreement:.4f} "
            f"mean_kl={self.mean_kl:.4f} max_kl={self.max_kl:.3f}"
        )


def scoring_session(folder: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """A session over ``folder``'s graph that emits logits for every position.

    A fused graph computes the LM head for the last position only; scoring needs all
    of them, so the graph is edited in memory and its weights read from ``folder``.
    """
    import onnx

    from edge_agent.export.fused import all_positions

    path = folder / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    if not all_positions(model):
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    options.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", str(folder)
    )
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


class _Scorer:
    """Runs a model folder's graph over a long sequence in cached chunks."""

    def __init__(self, folder: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = scoring_session(folder, options)
        except Exception as exc:  # onnxruntime raises bare pybind exceptions
            raise ModelError(f"cannot load {folder / 'model.onnx'}: {exc}") from exc
        self._outputs = [o.name for o in self.session.get_outputs()]
        manifest = Manifest.from_dir(folder)
        self._past = {
            i.name: (manifest.num_kv_heads or i.shape[1], manifest.head_dim or i.shape[3])
            for i in self.session.get_inputs()
            if i.name.startswith("past_key_values.")
        }
        self._position_ids = any(i.name == "position_ids" for i in self.session.get_inputs())

    def log_probs(self, ids: list[int]) -> Iterator[np.ndarray]:
        """Log-softmax rows for every position, one chunk at a time."""
        past = {n: np.zeros((1, h, 0, d), dtype=np.float32) for n, (h, d) in self._past.items()}
        done = 0
        while done < len(ids):
            step = ids[done : done + _CHUNK]
            feeds = {
                "input_ids": np.array([step], dtype=np.int64),
                "attention_mask": np.ones((1, done + len(step)), dtype=np.int64),
                **past,
            }
            if self._position_ids:
                feeds["position_ids"] = np.arange(done, done + len(step), dtype=np.int64)[None]
            out = dict(zip(self._outputs, self.session.run(None, feeds), strict=True))
            past = {
                "past_key_values." + k.removeprefix("present."): v
                for k, v in out.items()
                if k.startswith("present.")
            }
            done += len(step)
            # float32 is plenty for KL at these magnitudes and ~3x faster than float64.
            logits = out["logits"][0]
            logits -= logits.max(axis=-1, keepdims=True)
            yield logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def compare(quant_dir: Path, float_dir: Path, text: str, *, threads: int = 2) -> QualityResult:
    """Score ``quant_dir`` against ``float_dir`` on ``text`` (tokenized by the float folder)."""
    tokenizer = Tokenizer.from_file(str(float_dir / "tokenizer.json"))
    manifest = Manifest.from_dir(float_dir)
    ids = [manifest.bos_token_id, *tokenizer.encode(text, add_special_tokens=False).ids]
    context = manifest.context_length
    if len(ids) > context:
        ids = ids[:context]
    ref, test = _Scorer(float_dir, threads), _Scorer(quant_dir, threads)
    agree, kls = 0, []
    for lp, lq in zip(ref.log_probs(ids), test.log_probs(ids), strict=True):
        agree += int((lp.argmax(-1) == lq.argmax(-1)).sum())
        kls.append((np.exp(lp) * (lp - lq)).sum(-1, dtype=np.float64))
    kl = np.concatenate(kls)
    result = QualityResult(len(ids), agree / len(ids), float(kl.mean()), float(kl.max()))
    log.info(
        "quality_measured", quant=str(quant_dir), reference=str(float_dir), **result_dict(result)
    )
    return result


def result_dict(result: QualityResult) -> dict[str, float | int]:
    """The result as plain key-values (for logs and JSON)."""
    return {
        "tokens": result.tokens,
        "top1_agreement": round(result.top1_agreement, 4),
        "mean_kl": round(result.mean_kl, 5),
        "max_kl": round(result.max_kl, 4),
    }
