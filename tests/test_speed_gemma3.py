"""The default Gemma 3 270M drafts, and its narrations are identical with drafting off."""

from __future__ import annotations

import pytest

from edge_agent.export.gemma3 import Prepared
from edge_agent.export.spec import DEFAULT_VERIFY_POSITIONS
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.draft import DraftConfig
from edge_agent.llm.manifest import Manifest
from edge_agent.llm.runtime import OnnxGenerator
from tests.support.models import gemma3_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def test_narrations_are_identical_with_drafting_on_and_off(
    gemma3_model: Prepared,  # noqa: F811
) -> None:
    from edge_agent.bench.speed import workload

    folder = gemma3_model.int4_dir
    assert Manifest.from_dir(folder).verify_positions == DEFAULT_VERIFY_POSITIONS
    plain = OnnxGenerator.load(folder, draft=DraftConfig(enabled=False, pairs=True))
    drafting = OnnxGenerator.load(folder)
    accepted = 0
    for case in workload(folder, windows=1, seed=7, max_new_tokens=48, ask_max_new_tokens=64)[
        "cases"
    ]:
        request = GenerationRequest(
            case["prompt"],
            max_new_tokens=case["max_new_tokens"],
            stop=tuple(case["stop"]),
            prefix_chars=case["prefix_chars"],
        )
        want, got = plain.generate(request), drafting.generate(request)
        assert (got.text, got.new_tokens, got.stop_reason) == (
            want.text,
            want.new_tokens,
            want.stop_reason,
        )
        assert drafting.last_times is not None
        accepted += drafting.last_times.accepted_tokens
    # Narrations copy from their prompt: drafts are accepted.
    assert accepted > 0
