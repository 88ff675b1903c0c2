"""IOBinding engines give the same tokens as plain ``session.run``, for both graph kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ModelError
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.llm.session import uses_group_query_attention

PROMPTS = (
    "Summarise the kitchen temperature.",
    "The living room is warm and the humidity is 45 percent. " * 3,
)
HEAD = "Sensor readings follow. Summarise them for the household in one sentence.\n"


def _bound_and_plain(folder: Path) -> tuple[OnnxGenerator, OnnxGenerator]:
    """The folder behind the default (IOBinding) engine and behind plain ``session.run``."""
    return OnnxGenerator.load(folder), OnnxGenerator.load(folder, io_binding=False)


def _same_tokens(folder: Path) -> None:
    bound, plain = _bound_and_plain(folder)
    for user in PROMPTS:
        prompt = bound.render(user)
        a = bound.generate(GenerationRequest(prompt, 24))
        b = plain.generate(GenerationRequest(prompt, 24))
        assert (a.text, a.new_tokens, a.stop_reason) == (b.text, b.new_tokens, b.stop_reason)
    # The prefix cache over the bound engine: same text as the uncached plain run.
    for tail in ("kitchen 21.5 C", "garage door open"):
        prompt = bound.render(HEAD + tail)
        cut = prompt.find(HEAD) + len(HEAD)
        want = plain.generate(GenerationRequest(prompt, 12))
        got = bound.generate(GenerationRequest(prompt, 12, prefix_chars=cut))
        assert got.text == want.text
    assert bound.reused_tokens_total > 0


@pytest.mark.slow
def test_bound_growing_cache_equals_plain_run(tiny_optimum: TinyModel) -> None:
    assert not uses_group_query_attention(tiny_optimum.int4_dir / "model.onnx")
    _same_tokens(tiny_optimum.int4_dir)


@pytest.mark.slow
def test_shared_kv_buffer_equals_plain_run(tiny_model: TinyModel) -> None:
    # The default (fused) graph: GroupQueryAttention appends into one bound buffer.
    assert uses_group_query_attention(tiny_model.int4_dir / "model.onnx")
    _same_tokens(tiny_model.int4_dir)


def test_the_graph_kind_is_read_from_the_op_types(tmp_path: Path) -> None:
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"\x0a\x13GroupQueryAttention\x12\x00")
    assert uses_group_query_attention(graph)
    graph.write_bytes(b"\x0a\x03Add")
    assert not uses_group_query_attention(graph)
    graph.write_bytes(b"GroupQueryAttention sliding_window_cache")
    with pytest.raises(ModelError, match="windowed_kv_cache=false"):
        uses_group_query_attention(graph)


@pytest.mark.slow
def test_the_shared_buffer_grows_past_its_first_size_without_changing_tokens(
    tiny_model: TinyModel,
) -> None:
    # Buffers start at 256 positions; this prompt, its output and a kept head of more
    # than 256 tokens make the engine grow them for the request and on restore.
    bound, plain = _bound_and_plain(tiny_model.int4_dir)
    head = "The living room is warm and the humidity is 45 percent. " * 24
    assert len(bound.encode(head)) > 256
    for tail in ("kitchen 21.5 C", "garage door open"):
        prompt = bound.render(head + tail)
        cut = prompt.find(head) + len(head)
        want = plain.generate(GenerationRequest(prompt, 40))
        got = bound.generate(GenerationRequest(prompt, 40, prefix_chars=cut))
        assert (got.text, got.new_tokens) == (want.text, want.new_tokens)
        # Back to first-size buffers, so the next request's restore of the kept head
        # (more than 256 positions) must grow them first.
        bound._engine._grow(256, keep=0)  # type: ignore[attr-defined]
    assert bound.reused_tokens_total > 256


@pytest.mark.slow
def test_each_request_sizes_the_shared_buffer_and_a_short_one_shrinks_it(
    tiny_model: TinyModel,
) -> None:
    # GroupQueryAttention's cost follows the buffer's length: after a long request a
    # short one must not keep running over the long one's buffer.
    bound, plain = _bound_and_plain(tiny_model.int4_dir)
    long = bound.render("The living room is warm and the humidity is 45 percent. " * 24)
    short = bound.render("Summarise the kitchen temperature.")
    for prompt in (long, short, long):
        want = plain.generate(GenerationRequest(prompt, 16))
        got = bound.generate(GenerationRequest(prompt, 16))
        assert (got.text, got.new_tokens) == (want.text, want.new_tokens)
        needed = len(bound.encode(prompt)) + 16
        capacity = bound._engine._capacity  # type: ignore[attr-defined]
        assert needed <= capacity <= 2 * needed + 64, (needed, capacity)


@pytest.mark.slow
def test_a_fused_graph_with_logits_for_every_position_gives_the_same_tokens(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    # A GroupQueryAttention graph whose head runs on every position (a builder export
    # without prune_lm_head): its logits come back unallocated, behind the KV caches.
    onnx = pytest.importorskip("onnx")
    from edge_agent.export.fused import all_positions

    folder = tmp_path / "all-positions"
    folder.mkdir()
    for item in tiny_model.int4_dir.iterdir():
        if item.name != "model.onnx":
            (folder / item.name).hardlink_to(item)
    graph = onnx.load(str(tiny_model.int4_dir / "model.onnx"), load_external_data=False)
    assert all_positions(graph)
    onnx.save(graph, str(folder / "model.onnx"))
    # model.onnx no longer matches the manifest's checksum, so no verification.
    every = OnnxGenerator.load(folder, verify=False)
    last = OnnxGenerator.load(tiny_model.int4_dir)
    for user in PROMPTS:
        prompt = last.render(user)
        want = last.generate(GenerationRequest(prompt, 24))
        got = every.generate(GenerationRequest(prompt, 24))
        assert (got.text, got.new_tokens) == (want.text, want.new_tokens)
