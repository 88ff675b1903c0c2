"""Masks: merged states decide as before, share one free-text mask, and warm at start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from edge_agent.actions.constrain import JsonConstraint
from edge_agent.actions.dfa import DEAD, Dfa, compile_grammar
from edge_agent.actions.grammar import build_grammar
from edge_agent.actions.vocab import TokenTable
from edge_agent.actions.wiring import action_constraint, build_constraint, build_engine
from edge_agent.domain import Topics
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.settings import ActionsSettings
from tests.test_actions_decoding import REASON_MAX, SPECS, sample_with
from tests.test_actions_mqtt import ScriptedGenerator
from tests.test_actions_settings import light

NONE_HEAD = b'{"action": "none", "reason": "'
LIGHT_HEAD = (
    b'{"action": "hall_light", "device": "hall_lamp", '
    b'"params": {"state": "ON", "brightness": 20}, "reason": "'
)
HEAT_HEAD = b'{"action":"heat","device":"living_trv","params":{"target":21.5},"reason":"'


def run(dfa: Dfa, text: bytes) -> tuple[int, int]:
    """(state, counted bytes) after ``text``."""
    state, used = dfa.start, 0
    for byte in text:
        used += int(dfa.counted[state, byte])
        state = int(dfa.trans[state, byte])
    return state, used


@pytest.fixture(scope="module")
def dfas() -> tuple[Dfa, Dfa]:
    grammar = build_grammar(SPECS, REASON_MAX)
    return compile_grammar(grammar), compile_grammar(grammar, merge=False)


def test_merging_keeps_every_decision(dfas: tuple[Dfa, Dfa]) -> None:
    """Random walks (mostly along the grammar, sometimes off it) agree step by step."""
    merged, plain = dfas
    assert merged.size < plain.size
    rng = np.random.default_rng(0)
    for _ in range(400):
        a, b, used_a, used_b = merged.start, plain.start, 0, 0
        for _ in range(200):
            live = np.flatnonzero(plain.trans[b] != DEAD)
            if not len(live) or rng.random() < 0.02:
                byte = int(rng.integers(256))
            else:
                byte = int(rng.choice(live))
            used_a += int(merged.counted[a, byte])
            used_b += int(plain.counted[b, byte])
            a, b = int(merged.trans[a, byte]), int(plain.trans[b, byte])
            assert (a == DEAD) == (b == DEAD)
            assert merged.accepting[a] == plain.accepting[b]
            assert merged.to_accept[a] == plain.to_accept[b]
            assert used_a == used_b
            if b == DEAD:
                break


def test_every_action_shares_one_reason_state(dfas: tuple[Dfa, Dfa]) -> None:
    merged, plain = dfas
    heads = (NONE_HEAD, LIGHT_HEAD, HEAT_HEAD)
    assert len({run(merged, h)[0] for h in heads}) == 1
    assert len({run(plain, h)[0] for h in heads}) == 3  # what merging saves
    for head in heads:
        assert merged.accepting[run(merged, head + b'it is dark"}')[0]]


@pytest.fixture(scope="module")
def constraint(tiny_model: TinyModel) -> JsonConstraint:
    return build_constraint(SPECS, REASON_MAX, tiny_model.int4_dir)


def test_warm_computes_every_mask_a_generation_can_need(constraint: JsonConstraint) -> None:
    warmed = JsonConstraint(constraint.dfa, constraint.tokens)
    stats = warmed.warm()
    assert stats.states == warmed.cached_states
    assert stats.mask_bytes == warmed.mask_bytes > 0
    for seed in range(60):
        sample_with(
            warmed, lambda rng, _out: rng.normal(size=768).astype(np.float32) * 4, seed, 120
        )
    assert warmed.cached_states == stats.states  # nothing left to compute on the way


def test_merged_masks_take_less_memory(constraint: JsonConstraint) -> None:
    grammar = build_grammar(SPECS, REASON_MAX)
    plain = JsonConstraint(compile_grammar(grammar, merge=False), constraint.tokens)
    merged = JsonConstraint(compile_grammar(grammar), constraint.tokens)
    assert merged.warm().mask_bytes < plain.warm().mask_bytes


def test_free_text_is_masked_in_place_to_exactly_its_tokens(
    constraint: JsonConstraint, tiny_model: TinyModel
) -> None:
    table = TokenTable.from_tokenizer_json(tiny_model.int4_dir / "tokenizer.json", ())
    single = {t[0]: i for i, t in enumerate(table.tokens) if t is not None and len(t) == 1}
    head = [single[b] for b in NONE_HEAD]
    processor = constraint.processor(200)
    state, _ = run(constraint.dfa, NONE_HEAD)
    mask = constraint.mask(state)
    assert mask.refused is not None  # the large set: the in-place path
    logits = np.random.default_rng(1).normal(size=constraint.tokens.size).astype(np.float32)
    out = processor(head, logits.copy())
    assert set(np.flatnonzero(np.isfinite(out)).tolist()) == set(mask.ids.tolist())
    assert np.array_equal(out[mask.ids], logits[mask.ids])


async def _no_generation(_kind: str, _request: GenerationRequest) -> Generation | None:
    return None


def test_the_engine_warms_its_masks_when_built(tiny_model: TinyModel, tmp_path: Path) -> None:
    settings = ActionsSettings(allow=[light()], audit_path=tmp_path / "audit.sqlite")
    with capture_logs() as logs:
        engine = build_engine(
            settings,
            constraint=action_constraint(settings, tiny_model.int4_dir),
            generator=ScriptedGenerator(),
            submit=_no_generation,
            publish=lambda _topic, _payload, *, retain=False: None,
            topics=Topics.under("t"),
            deadline_s=10,
        )
        assert engine is not None
        assert engine.warmup is not None
        stats = engine.warmup.result(timeout=60)
    assert stats.states > 1
    warm = [e for e in logs if e["event"] == "action_masks_warm"]
    assert warm
    assert warm[0]["states"] == stats.states
    assert warm[0]["mask_bytes"] == stats.mask_bytes
