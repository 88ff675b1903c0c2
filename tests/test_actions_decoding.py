"""Constrained decoding: whatever the logits, the output is JSON the allowlist allows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.actions.constrain import JsonConstraint
from edge_agent.actions.dfa import DEAD, compile_grammar
from edge_agent.actions.grammar import build_grammar
from edge_agent.actions.policy import Policy
from edge_agent.actions.vocab import TokenTable
from edge_agent.actions.wiring import build_constraint
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import GenerationRequest, Sampling
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.settings import ActionSpec
from tests.test_actions_policy import HEAT
from tests.test_actions_settings import light

PLUG = {
    "id": "plug",
    "description": "Switch a Tasmota plug",
    "topic": "cmnd/{device}/POWER",
    "payload": "{state}",
    "devices": ["tasmota_1", "tasmota kitchen"],
    "risk": "low",
    "mode": "auto",
    "params": {"state": {"type": "enum", "values": ["ON", "OFF", "TOGGLE"]}},
}
SPECS = (
    ActionSpec(**light(devices=["hall_lamp", "porch lamp"])),
    ActionSpec(**HEAT),
    ActionSpec(**PLUG),
    ActionSpec(**light(id="garage_door", mode="off", devices=["garage"])),
)
REASON_MAX = 40


def accepts(text: str) -> bool:
    dfa = compile_grammar(build_grammar(SPECS, REASON_MAX))
    state, used = dfa.start, 0
    for byte in text.encode():
        used += int(dfa.counted[state, byte])
        state = int(dfa.trans[state, byte])
        if state == DEAD:
            return False
    return bool(dfa.accepting[state]) and used <= REASON_MAX


@pytest.mark.parametrize(
    "text",
    [
        '{"action":"none","reason":"all fine"}',
        '{"action": "hall_light", "device": "porch lamp", "params": {"state": "OFF", '
        '"brightness": 0}, "reason": "nobody home, été"}',
        '{"action":"heat","device":"living_trv","params":{"target":-0.0},"reason":""}'.replace(
            "-0.0", "21.5"
        ),
        '{"action":"plug","device":"tasmota kitchen","params":{"state":"TOGGLE"},"reason":"x"}',
    ],
)
def test_the_grammar_accepts_allowed_documents(text: str) -> None:
    assert accepts(text)
    assert json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"action":"unlock_front_door","device":"front_door","params":{},"reason":""}',
        '{"action":"garage_door","device":"garage","params":{},"reason":""}',  # mode off
        '{"action":"hall_light","device":"front_door","params":{"state":"ON","brightness":1},'
        '"reason":""}',
        '{"action":"hall_light","device":"hall_lamp","params":{"state":"ON","brightness":255},'
        '"reason":""}',
        '{"action":"hall_light","device":"hall_lamp","params":{"state":"ON","brightness":007},'
        '"reason":""}',
        '{"action":"heat","device":"living_trv","params":{"target":30.01},"reason":""}',
        '{"action":"heat","device":"living_trv","params":{"target":4.9},"reason":""}',
        '{"action":"none","reason":"quote \\" escape"}',
        '{"action":"none","reason":"line\nbreak"}',
        '{"action":"none","reason":"' + "x" * (REASON_MAX + 1) + '"}',
        '{"action":"none","reason":"ok"} trailing',
    ],
)
def test_the_grammar_refuses_anything_else(text: str) -> None:
    assert not accepts(text)


@pytest.fixture(scope="module")
def constraint(tiny_model: TinyModel) -> JsonConstraint:
    return build_constraint(SPECS, REASON_MAX, tiny_model.int4_dir)


def sample_with(
    constraint: JsonConstraint, logits_for: object, seed: int, budget: int
) -> list[int]:
    """Drive the processor step by step with made-up logits, like a runtime would."""
    rng = np.random.default_rng(seed)
    processor = constraint.processor(budget)
    eos = set(constraint.tokens.eos.tolist())
    out: list[int] = []
    while len(out) < budget:  # the runtime stops at the budget, like here
        logits = logits_for(rng, out)  # type: ignore[operator]
        masked = processor(out, logits)
        probs = np.exp(masked - masked.max())
        token = int(rng.choice(len(probs), p=probs / probs.sum()))
        if token in eos:
            break
        out.append(token)
    return out


def decode(tiny_model: TinyModel, ids: list[int]) -> str:
    table = TokenTable.from_tokenizer_json(tiny_model.int4_dir / "tokenizer.json", ())
    return b"".join(table.tokens[i] or b"" for i in ids).decode("utf-8")


def test_random_logits_always_give_allowed_json(
    constraint: JsonConstraint, tiny_model: TinyModel
) -> None:
    policy = Policy(SPECS, reason_max=REASON_MAX)
    actions = set()
    for seed in range(150):
        ids = sample_with(
            constraint, lambda rng, _out: rng.normal(size=768).astype(np.float32) * 4, seed, 120
        )
        cand, verdict = policy.shape(json.loads(decode(tiny_model, ids)))
        assert verdict.ok, (seed, verdict)
        assert cand is not None
        actions.add(cand.action)
    assert actions == {"hall_light", "heat", "plug", "none"}  # all reachable, 'off' never


def test_logits_that_push_for_a_forbidden_action_cannot_get_it(
    constraint: JsonConstraint, tiny_model: TinyModel
) -> None:
    """A model 'convinced' by an injection still cannot spell what the grammar refuses."""
    table = TokenTable.from_tokenizer_json(tiny_model.int4_dir / "tokenizer.json", ())
    evil = [
        i for i, t in enumerate(table.tokens) if t and any(w in t for w in (b"unl", b"door", b"9"))
    ]

    def push(rng: np.random.Generator, _out: list[int]) -> np.ndarray:
        logits = rng.normal(size=768).astype(np.float32)
        logits[evil] += 30.0
        return logits

    for seed in range(30):
        text = decode(tiny_model, sample_with(constraint, push, seed, 120))
        assert accepts(text), text


def test_a_small_budget_still_closes_the_document(
    constraint: JsonConstraint, tiny_model: TinyModel
) -> None:
    for seed in range(20):
        ids = sample_with(
            constraint, lambda rng, _out: rng.normal(size=768).astype(np.float32), seed, 45
        )
        assert len(ids) <= 45
        assert accepts(decode(tiny_model, ids))


def test_token_bytes_match_the_tokenizer(tiny_model: TinyModel) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_model.int4_dir / "tokenizer.json"))
    table = TokenTable.from_tokenizer_json(tiny_model.int4_dir / "tokenizer.json", ())
    text = '{"action": "hall_light", "reason": "Élan 21.5 °C"}\n'
    ids = tok.encode(text, add_special_tokens=False).ids
    assert b"".join(table.tokens[i] or b"?" for i in ids) == text.encode()


def test_sentencepiece_pieces_map_to_bytes() -> None:
    table = TokenTable.from_pieces(
        ["<pad>", "▁the", "<0x0A>", '{"', None], byte_level=False, eos_ids=[0]
    )
    assert table.tokens[1:4] == (b" the", b"\n", b'{"')
    assert table.tokens[4] is None


def test_the_tiny_model_samples_only_allowed_json(
    constraint: JsonConstraint, tiny_model: TinyModel
) -> None:
    """The real runtime, sampling at temperature 1 with many seeds."""
    generator = OnnxGenerator.load(tiny_model.int4_dir, threads=1)
    policy = Policy(SPECS, reason_max=REASON_MAX)
    prompt = generator.render("Which action, if any? Readings: hall_lamp brightness now 3.")
    budget = generator.context_length - generator.count_tokens(prompt)
    for seed in range(40):
        result = generator.generate(
            GenerationRequest(
                prompt,
                max_new_tokens=budget,
                sampling=Sampling(temperature=1.0, seed=seed),
                logits_processor=constraint.processor(budget),
            )
        )
        assert result.stop_reason in ("eos", "max_new_tokens"), (seed, result)
        _, verdict = policy.shape(json.loads(result.text))
        assert verdict.ok, (seed, result.text, verdict)
