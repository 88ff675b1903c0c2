"""Benchmark of constrained decoding: processor cost per token against a decode step.

    python -m edge_agent.actions.bench MODEL_DIR [--vocab-gguf FILE.gguf] [--tokens N]

With a model folder, it times unconstrained and constrained generation on the real
runtime (the processor's own time is measured around each call). ``--vocab-gguf`` also
times the processor alone over a GGUF file's vocabulary (e.g. Gemma 3's 262k tokens)
driven by random logits, cold (masks being computed) and warm (cached).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_agent.actions.constrain import ConstrainedProcessor, JsonConstraint
from edge_agent.actions.dfa import compile_grammar
from edge_agent.actions.grammar import build_grammar
from edge_agent.actions.vocab import TokenArrays, TokenTable
from edge_agent.llm.base import GenerationRequest, Sampling
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.settings import ActionSpec

_SPECS = (
    ActionSpec(
        id="hall_light",
        description="Switch the hall light",
        topic="zigbee2mqtt/{device}/set",
        payload='{"state": "{state}", "brightness": {brightness}}',
        devices=("hall_lamp", "porch lamp", "kitchen spots"),
        risk="low",
        mode="confirm",
        params={
            "state": {"type": "enum", "values": ("ON", "OFF")},
            "brightness": {"type": "int", "min": 0, "max": 254},
        },
    ),
    ActionSpec(
        id="heat",
        description="Set a radiator",
        topic="zigbee2mqtt/{device}/set",
        payload='{"current_heating_setpoint": {target}}',
        devices=("living_trv", "bedroom_trv"),
        risk="medium",
        mode="confirm",
        params={"target": {"type": "float", "min": 5, "max": 30, "decimals": 1}},
    ),
)


class _Timed:
    """Wraps a processor and sums the time spent in it."""

    def __init__(self, inner: ConstrainedProcessor) -> None:
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(
        self, generated: Sequence[int], logits: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        started = time.perf_counter()
        out = self.inner(generated, logits)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return out


def _model(model_dir: Path, tokens: int, runs: int) -> None:
    gen = OnnxGenerator.load(model_dir, threads=2)
    eos = gen.manifest.eos_token_ids
    started = time.perf_counter()
    table = TokenTable.from_tokenizer_json(model_dir / "tokenizer.json", eos)
    constraint = JsonConstraint(
        compile_grammar(build_grammar(_SPECS, 120)), TokenArrays.pack(table)
    )
    print(
        f"vocab {constraint.tokens.size}, states {constraint.dfa.size}, "
        f"build {1000 * (time.perf_counter() - started):.0f} ms"
    )
    prompt = gen.render("Which action, if any? Readings: hall_lamp brightness now 3.")
    plain = GenerationRequest(prompt, max_new_tokens=tokens, sampling=Sampling(1.0, seed=0))
    gen.generate(plain)
    step = []
    for _ in range(runs):
        gen.generate(plain)
        t = gen.last_times
        assert t is not None
        step.append(t.decode_s / max(t.decode_tokens, 1))
    base = float(np.median(step))
    print(f"unconstrained decode step: {1000 * base:.3f} ms/token")
    for label in ("cold", "warm", "warm"):
        timed = _Timed(constraint.processor(tokens))
        result = gen.generate(
            GenerationRequest(
                prompt,
                max_new_tokens=tokens,
                sampling=Sampling(1.0, seed=1),
                logits_processor=timed,
            )
        )
        per = timed.seconds / max(timed.calls, 1)
        print(
            f"processor ({label}): {1000 * per:.3f} ms/token = {100 * per / base:.1f}% of a "
            f"step over {timed.calls} tokens; output {result.text[:60]!r}"
        )


def _gguf_table(path: Path) -> TokenTable:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    types = reader.fields["tokenizer.ggml.token_type"]
    pieces: list[str | None] = []
    for i, t in zip(tokens.data, types.data, strict=True):
        kind = int(types.parts[t][0])
        pieces.append(None if kind in (2, 3, 5) else bytes(tokens.parts[i]).decode("utf-8"))
    eos = int(reader.fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    return TokenTable.from_pieces(pieces, byte_level=False, eos_ids=[eos, 106])


def _vocab_only(table: TokenTable, tokens: int, runs: int) -> None:
    started = time.perf_counter()
    constraint = JsonConstraint(
        compile_grammar(build_grammar(_SPECS, 120)), TokenArrays.pack(table)
    )
    print(
        f"vocab {constraint.tokens.size}, states {constraint.dfa.size}, "
        f"build {1000 * (time.perf_counter() - started):.0f} ms"
    )
    size = constraint.tokens.size
    base_times = []
    for run in range(runs):
        rng = np.random.default_rng(run)
        timed = _Timed(constraint.processor(tokens))
        out: list[int] = []
        sample_s = 0.0
        while len(out) < tokens:
            logits = rng.normal(size=size).astype(np.float32) * 3
            masked = timed(out, logits)
            t0 = time.perf_counter()
            token = int(np.argmax(masked))  # greedy over the masked logits
            sample_s += time.perf_counter() - t0
            if token in set(constraint.tokens.eos.tolist()):
                break
            out.append(token)
        base_times.append(sample_s / max(timed.calls, 1))
        label = "cold" if run == 0 else "warm"
        print(
            f"processor ({label}): {1000 * timed.seconds / max(timed.calls, 1):.3f} ms/token "
            f"over {timed.calls} tokens, {constraint.cached_states} states cached; "
            f"argmax over the vocab alone {1000 * base_times[-1]:.3f} ms"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path, nargs="?")
    parser.add_argument("--vocab-gguf", type=Path)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if args.model_dir:
        print(f"== model {args.model_dir}")
        _model(args.model_dir, args.tokens, args.runs)
    if args.vocab_gguf:
        print(f"== vocabulary of {args.vocab_gguf}")
        _vocab_only(_gguf_table(args.vocab_gguf), args.tokens, args.runs)


if __name__ == "__main__":
    main()
