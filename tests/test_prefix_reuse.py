"""The kept prompt head serves a prompt that shares only its first tokens (partial reuse).

Requests pick their own few-shot examples, so consecutive prompts often agree on the
instructions and the first examples only. The runtime restores the positions both
share and prefills the rest; results must be those of a fresh prefill, on every engine.
"""

from __future__ import annotations

import pytest

from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.runtime import OnnxGenerator

pytestmark = pytest.mark.slow

HEAD = "Sensor notes follow. Summarise them for the household in one short sentence.\n"
EXAMPLES = (
    "Example: kitchen 21.5 C, steady. Summary: the kitchen is 21.5 C.\n",
    "Example: garage door open twice. Summary: the garage door opened twice.\n",
)


@pytest.mark.parametrize(
    ("model", "io_binding"),
    [
        ("tiny_model", True),  # fused graph: the shared KV buffer
        ("tiny_model", False),  # plain session.run
        ("tiny_optimum", True),  # growing cache through IOBinding
    ],
)
def test_a_prompt_sharing_part_of_the_kept_head_reuses_that_part(
    request: pytest.FixtureRequest, model: str, io_binding: bool
) -> None:
    folder = request.getfixturevalue(model).int4_dir
    fresh = OnnxGenerator.load(folder, io_binding=io_binding)
    cached = OnnxGenerator.load(folder, io_binding=io_binding)
    # The head (instructions + examples) differs after the instructions between requests.
    prompts = [
        cached.render(HEAD + EXAMPLES[0] + "Notes: bedroom 18 C, humid"),
        cached.render(HEAD + EXAMPLES[1] + "Notes: garage 9 C"),
        cached.render(HEAD + EXAMPLES[1] + "Notes: study CO2 1,130 ppm"),
        cached.render(HEAD + EXAMPLES[0] + "Notes: kitchen 24 C"),
    ]
    reused = []
    for prompt in prompts:
        head_chars = prompt.index("Notes:")
        want = fresh.generate(GenerationRequest(prompt, 12))
        before = cached.reused_tokens_total
        got = cached.generate(GenerationRequest(prompt, 12, prefix_chars=head_chars))
        reused.append(cached.reused_tokens_total - before)
        assert (got.text, got.new_tokens, got.stop_reason) == (
            want.text,
            want.new_tokens,
            want.stop_reason,
        )
    instructions = len(cached.encode(cached.render(HEAD)))
    # First: nothing kept. Second and fourth: the instructions only (the examples
    # differ). Third: the whole kept head.
    assert reused[0] == 0
    assert instructions - 2 <= reused[1] < cached.cached_prefix_tokens
    assert reused[2] > reused[1]
    assert instructions - 2 <= reused[3] < reused[2]
    assert fresh.reused_tokens_total == 0
