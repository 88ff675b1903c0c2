"""``bench narration --speed``: narration latency and decode rate, drafting on and off, vs peers.

The requests are the service's own: the seeded synthetic windows of
``bench/narration.py`` narrated with the summary prompt, and questions about the same
windows with the answer prompt, both wrapped by ``narrator.narration_request`` (the
template, the KV-cache head, the stops). Every engine runs them in its own process,
greedy, same stops and budgets, over the same token ids:

- ``ours-draft`` / ``ours-plain``: our runtime with and without prompt-lookup drafting
  (both with the prefix cache, as the service runs); ``ours-plain`` is the one-row
  decode of the runtime before drafting (the speed reference), ``ours-pairs`` drafting
  off with two-row passes, the kernel drafting uses (the identical-text reference);
- ``llama.cpp`` / ``llama.cpp-lookup``: llama-cpp-python on the same GGUF, plain and
  with its ``LlamaPromptLookupDecoding``;
- ``onnxruntime-genai``: on a folder with a ``genai_config.json`` (the builder's, or
  ours with the head on the last position, written by ``genai_folder``).

Rounds alternate the engines' order; values are medians over rounds and each ratio is
the median of the rounds' own ratios, so engines measured side by side share the
machine's drift.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

import structlog

from edge_agent.bench.narration import LIMITS, synthetic_cases
from edge_agent.bench.runner import Contender, launch_child
from edge_agent.findings import FindingRules, find
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.llm.manifest import Manifest
from edge_agent.narrator import narration_request
from edge_agent.prompts import answer_prompt, relevant, summary_prompt
from edge_agent.semantics import Naming

log = structlog.get_logger(__name__)

QUESTIONS = (
    "Is it warm in there?",
    "What is the humidity?",
    "Is the air fresh?",
    "Summarise the readings in one sentence.",
)
PEERS = ("llama.cpp", "llama.cpp-lookup", "onnxruntime-genai")


class _Folder:
    """The ``Generator`` face of a model folder that ``narration_request`` needs (no model)."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self._manifest = Manifest.from_dir(folder)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))

    @property
    def model_id(self) -> str:
        return f"{self._manifest.family}:{self._manifest.source}"

    @property
    def prompt_format(self) -> Literal["chat", "completion"]:
        return self._manifest.prompt_format

    @property
    def context_length(self) -> int:
        return self._manifest.context_length

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self._manifest.stop_strings

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def render(self, user: str) -> str:
        return self._manifest.render(user)

    def generate(self, request: GenerationRequest) -> Generation:
        raise NotImplementedError("a prompt builder only")


def workload(
    folder: Path, *, windows: int, seed: int, max_new_tokens: int, ask_max_new_tokens: int
) -> dict[str, Any]:
    """The requests (summaries, then answers) as the children read them."""
    face = _Folder(folder)
    out = []
    rules, names = FindingRules(limits=LIMITS, tz=UTC), Naming()
    for number, case in enumerate(synthetic_cases(windows, seed)):
        # The service's own pipeline: the window's findings, then its prompts (v5).
        found = find(
            case.facts, rules=rules, names=names, excursions=case.excursions,
            baseline=case.baseline, window_s=case.window_s,
        )  # fmt: skip
        style = face.prompt_format
        question = QUESTIONS[number % len(QUESTIONS)]
        prompts = [
            ("summary", summary_prompt(names.area(case.area), found.items, style=style)),
            ("answer", answer_prompt(question, relevant(question, found.items), style=style)),
        ]
        for kind, prompt in prompts:
            budget = max_new_tokens if kind == "summary" else ask_max_new_tokens
            request = narration_request(face, prompt, max_new_tokens=budget)
            out.append(
                {
                    "kind": kind,
                    "prompt": request.prompt,
                    "ids": face.encode(request.prompt),
                    "prefix_chars": request.prefix_chars,
                    "stop": list(request.stop),
                    "all_stops": [s for s in face.stop_strings + request.stop if s],
                    "max_new_tokens": budget,
                }
            )
    # Summaries first, then answers: each kind shares its prompt head.
    out.sort(key=lambda c: c["kind"] != "summary")
    manifest = Manifest.from_dir(folder)
    return {"cases": out, "eos": list(manifest.eos_token_ids), "context": 2048}


def run_rounds(
    contenders: list[Contender],
    work: dict[str, Any],
    *,
    rounds: int,
    threads: int,
    timeout_s: float,
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, dict[str, Any]]]:
    """Every contender once per round, the order reversed every other round."""
    done: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="edge-agent-speed-") as tmp:
        path = Path(tmp) / "workload.json"
        path.write_text(json.dumps(work), encoding="utf-8")
        for number in range(rounds):
            order = contenders if number % 2 == 0 else list(reversed(contenders))
            measured = {}
            for contender in order:
                result = _child(contender, path, threads=threads, timeout_s=timeout_s)
                measured[contender.engine] = result
                if on_result is not None:
                    on_result(number + 1, result)
            done.append(measured)
    return done


def _child(
    contender: Contender, workload: Path, *, threads: int, timeout_s: float
) -> dict[str, Any]:
    args = ("--threads", str(threads))
    raw, why = launch_child(contender, "edge_agent.bench.speed_child", workload, args, timeout_s)
    return raw if raw is not None else {"engine": contender.engine, "skipped": why}


def write_genai_config(folder: Path, *, threads: int = 2) -> None:
    """A ``genai_config.json`` so onnxruntime-genai runs one of our fused folders.

    Our fused graph has the builder's input and output names and its shared-buffer
    GroupQueryAttention; the head must be on the last position only (verify positions 1).
    """
    manifest = Manifest.from_dir(folder)
    if manifest.verify_positions != 1 or manifest.graph != "fused":
        raise ValueError(f"{folder}: onnxruntime-genai needs a fused graph, verify positions 1")
    config = _graph_shape(folder / "model.onnx")
    genai = {
        "model": {
            "bos_token_id": manifest.bos_token_id,
            "context_length": manifest.context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": manifest.head_dim,
                "hidden_size": config.get("hidden_size", 0),
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": config.get("num_attention_heads", 0),
                "num_hidden_layers": manifest.num_layers,
                "num_key_value_heads": manifest.num_kv_heads,
            },
            "eos_token_id": list(manifest.eos_token_ids),
            "pad_token_id": manifest.pad_token_id,
            "type": "gemma3_text" if manifest.family == "gemma3" else "gemma2",
            "vocab_size": config.get("vocab_size", 0),
        },
        "search": {
            "do_sample": False,
            "max_length": min(manifest.context_length, 2048),
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
    (folder / "genai_config.json").write_text(json.dumps(genai, indent=2), encoding="utf-8")


def _graph_shape(path: Path) -> dict[str, int]:
    """Vocabulary, hidden size and query heads, read off the graph itself."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    logits = next(o for o in graph.output if o.name == "logits")
    vocab = logits.type.tensor_type.shape.dim[2].dim_value
    norm = next(t for t in graph.initializer if t.name == "model.norm.weight")
    gqa = next(n for n in graph.node if n.op_type == "GroupQueryAttention")
    heads = next(a.i for a in gqa.attribute if a.name == "num_heads")
    return {"vocab_size": vocab, "hidden_size": int(norm.dims[0]), "num_attention_heads": heads}


# --- the report ---------------------------------------------------------------------


def _latency(result: dict[str, Any], kind: str | None = None) -> float | None:
    runs = [r for r in result.get("runs", []) if kind is None or r.get("kind", kind) == kind]
    return float(statistics.median(r["latency_s"] for r in runs)) if runs else None


def _decode_rate(result: dict[str, Any]) -> float | None:
    runs = [r for r in result.get("runs", []) if r["new_tokens"] > 1 and r["decode_s"] > 0]
    if not runs:
        return None
    return float(sum(r["new_tokens"] - 1 for r in runs) / sum(r["decode_s"] for r in runs))


def _accepted_per_step(result: dict[str, Any]) -> float | None:
    runs = result.get("runs", [])
    steps = sum(r.get("verify_steps", 0) for r in runs)
    return float(sum(r.get("accepted", 0) for r in runs) / steps) if steps else None


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def summarise(rounds: list[dict[str, dict[str, Any]]], engines: list[str]) -> dict[str, Any]:
    """Medians per engine, per-round ratios, and the bar's keys."""
    ours = "ours-draft"
    table: dict[str, dict[str, float | None]] = {}
    for engine in engines:
        results = [r[engine] for r in rounds if engine in r and not r[engine].get("skipped")]
        table[engine] = {
            "latency_s": _median([_latency(x) for x in results]),
            "decode_tok_s": _median([_decode_rate(x) for x in results]),
            "accepted_per_step": _median([_accepted_per_step(x) for x in results]),
        }
    ratios: dict[str, list[float]] = {}
    for engine in engines:
        if engine == ours:
            continue
        each = []
        for r in rounds:
            mine, theirs = r.get(ours, {}), r.get(engine, {})
            a, b = _latency(mine), _latency(theirs)
            if a and b:
                each.append(b / a)
        ratios[engine] = each
    plain = []
    for r in rounds:
        a, b = _decode_rate(r.get(ours, {})), _decode_rate(r.get("ours-plain", {}))
        if a and b:
            plain.append(a / b)
    peers = [e for e in engines if e in PEERS and table[e]["latency_s"] is not None]
    best = min(peers, key=lambda e: table[e]["latency_s"] or 0.0) if peers else None
    identical = _same_texts(rounds, ours, "ours-pairs")
    return {
        "engines": table,
        "speedup_vs_plain": statistics.median(plain) if plain else None,
        "speedup_vs_plain_rounds": plain,
        "best_peer": best,
        "speedup_vs_best_peer": statistics.median(ratios[best]) if best and ratios[best] else None,
        "speedup_vs_best_peer_rounds": ratios[best] if best else [],
        "latency_ratio_rounds": ratios,
        "identical_text": identical,
        "identical_text_one_row_plain": _same_texts(rounds, ours, "ours-plain"),
        "rounds": len(rounds),
        "skipped": {e: r[e]["skipped"] for r in rounds for e in r if r[e].get("skipped")},
    }


def _same_texts(rounds: list[dict[str, dict[str, Any]]], a: str, b: str) -> bool | None:
    """True when ``a`` and ``b`` wrote the same texts in every round both ran."""
    pairs = [
        ([x["text"] for x in r[a]["runs"]], [x["text"] for x in r[b]["runs"]])
        for r in rounds
        if r.get(a, {}).get("runs") and r.get(b, {}).get("runs")
    ]
    return all(x == y for x, y in pairs) if pairs else None


def render(summary: dict[str, Any], requests: int) -> str:
    """The table: latency per request, decode rate, accepted tokens per verify step, ratios."""
    lines = [
        f"{'engine':20s} {'latency/req ms':>14s} {'decode tok/s':>12s} {'accepted/step':>13s} "
        f"{'ours-draft is':>14s}",
        "-" * 78,
    ]
    for engine, row in summary["engines"].items():
        lat, rate, acc = row["latency_s"], row["decode_tok_s"], row["accepted_per_step"]
        each = summary["latency_ratio_rounds"].get(engine, [])
        ratio = f"{statistics.median(each):.2f}x faster" if each else ""
        lines.append(
            f"{engine:20s} {_fmt(lat, 1000, 0):>14s} {_fmt(rate, 1, 1):>12s} "
            f"{_fmt(acc, 1, 2):>13s} {ratio:>14s}"
        )
    lines.append("-" * 78)
    plain = summary["speedup_vs_plain_rounds"]
    lines.append(
        f"decode tok/s, drafting on / off: {_fmt(summary['speedup_vs_plain'], 1, 2)}x "
        f"(rounds {' '.join(f'{x:.2f}' for x in plain)})"
    )
    best = summary["best_peer"]
    if best:
        rounds = summary["speedup_vs_best_peer_rounds"]
        lines.append(
            f"latency per request, best peer ({best}) / ours-draft: "
            f"{_fmt(summary['speedup_vs_best_peer'], 1, 2)}x "
            f"(rounds {' '.join(f'{x:.2f}' for x in rounds)})"
        )
    lines.append(
        f"identical text, drafting on vs off (two-row passes): {summary['identical_text']}; "
        f"vs off with one-row passes: {summary['identical_text_one_row_plain']}"
    )
    for engine, why in summary["skipped"].items():
        lines.append(f"skipped {engine}: {why}")
    lines.append(
        f"{requests} requests per engine per round (summaries and answers), greedy; "
        "values are medians over rounds, ratios medians of each round's"
    )
    return "\n".join(lines)


def _fmt(value: float | None, scale: float, digits: int) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"
