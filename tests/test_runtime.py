"""OnnxGenerator: greedy KV-cache decoding, stop conditions, and refusing bad model folders."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.errors import ContextOverflowError, GenerationError, ModelError, ModelVerifyError
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.manifest import Manifest, Quantization, verify
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.llm.stream import IncrementalText, StopScanner
from tests.support.agent import run_cli
from tests.support.models import OnnxHarness

PROMPTS = (
    "Summarise the kitchen temperature.",
    "The living room is warm and the humidity is 45 percent.",
    "Hello.",
)
TEMPLATE = "<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


def _manifest(**changes: object) -> Manifest:
    base = Manifest(
        family="gemma2",
        source="unit",
        revision="r1",
        context_length=64,
        bos_token_id=2,
        eos_token_ids=(1, 5),
        pad_token_id=0,
        prompt_template=TEMPLATE,
        quantization=Quantization("matmul_nbits", 4, 32, 4, True),
        files={"model.onnx": "0" * 64, "tokenizer.json": "1" * 64},
        stop_strings=("\n\n",),
        tools={"onnx": "1.0"},
        num_layers=2,
        num_kv_heads=2,
        head_dim=16,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- manifest codec: pure, no model needed ---------------------------------------------


def test_manifest_round_trips_through_json() -> None:
    manifest = _manifest()
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_manifest_sizes_round_trip_and_an_old_manifest_has_none() -> None:
    sized = _manifest(sizes={"model.onnx": 10, "tokenizer.json": 20})
    assert Manifest.from_json(sized.to_json()) == sized
    raw = json.loads(sized.to_json())
    del raw["sizes"]
    old = Manifest.from_json(json.dumps(raw))
    assert old.sizes == {}
    assert old.size_problem("model.onnx", 3) is None  # nothing recorded: nothing to say
    assert sized.size_problem("model.onnx", 10) is None
    assert "truncated" in (sized.size_problem("model.onnx", 3) or "")
    assert "larger" in (sized.size_problem("model.onnx", 11) or "")


def test_manifest_renders_user_text_with_braces_verbatim() -> None:
    rendered = _manifest().render("temp {max} 21")
    assert rendered == TEMPLATE.replace("{user}", "temp {max} 21")


@pytest.mark.parametrize(
    ("template", "reason"),
    [("{prompt}", "KeyError"), ("no placeholder", "has none"), ("{user} {0}", "positional")],
)
def test_manifest_rejects_a_template_without_exactly_user(template: str, reason: str) -> None:
    text = _manifest(prompt_template=template).to_json()
    with pytest.raises(ModelError, match="prompt_template") as err:
        Manifest.from_json(text)
    assert reason in str(err.value)


def test_manifest_rejects_another_schema_version_and_missing_fields() -> None:
    raw = json.loads(_manifest().to_json())
    with pytest.raises(ModelError, match="schema_version 99"):
        Manifest.from_json(json.dumps({**raw, "schema_version": 99}))
    with pytest.raises(ModelError, match="prompt_format"):
        Manifest.from_json(json.dumps({**raw, "prompt_format": "instruct"}))
    assert Manifest.from_json(json.dumps({**raw, "prompt_format": "completion"})).prompt_format == (
        "completion"
    )
    del raw["context_length"]
    with pytest.raises(ModelError, match="context_length"):
        Manifest.from_json(json.dumps(raw), origin="x/manifest.json")


def test_a_missing_folder_or_manifest_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as err:
        Manifest.from_dir(tmp_path / "nope")
    assert not isinstance(err.value, ModelVerifyError)
    with pytest.raises(ModelError, match=r"manifest\.json is missing"):
        verify(tmp_path)


def test_stop_scanner_never_streams_part_of_a_stop_string() -> None:
    pieces: list[str] = []
    scanner = StopScanner(("\n\n",), pieces.append)
    assert scanner.update("ab") == ("ab", False)
    assert scanner.update("ab\n") == ("ab\n", False)
    assert scanner.update("ab\n\nc") == ("ab", True)
    assert pieces == ["ab"]


def test_stop_scanner_holds_back_unfinished_characters_until_done() -> None:
    pieces: list[str] = []
    scanner = StopScanner((), pieces.append)
    scanner.update("x\ufffd")
    scanner.update("x\u00e9")
    scanner.update("x\u00e9\ufffd")
    scanner.finish("x\u00e9\ufffd")
    assert pieces == ["x", "\u00e9", "\ufffd"]


def test_incremental_text_matches_decoding_everything_at_every_step() -> None:
    # A SentencePiece-like decoder: a sequence's first piece loses its leading space,
    # and a character split over byte pieces decodes to U+FFFD until it is whole.
    pieces = {1: " The", 2: " caf", 3: b"\xc3", 4: b"\xa9", 5: " is", 6: " warm", 7: "."}

    def decode(ids: list[int]) -> str:
        raw = b"".join(p if isinstance(p, bytes) else p.encode() for p in map(pieces.get, ids))
        return raw.decode("utf-8", "replace").removeprefix(" ")

    decodes: list[int] = []

    def counted(ids: list[int]) -> str:
        decodes.append(len(ids))
        return decode(ids)

    ids = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4]
    incremental = IncrementalText(counted)
    for n in range(1, len(ids) + 1):
        assert incremental.text(ids[:n]) == decode(ids[:n])
    assert max(decodes) <= 3, "each step decodes a short window, not the whole list"


def test_a_failing_text_sink_is_dropped_not_fatal() -> None:
    calls: list[str] = []

    def sink(piece: str) -> None:
        calls.append(piece)
        raise RuntimeError("listener gone")

    scanner = StopScanner((), sink)
    with capture_logs() as logs:
        scanner.update("a")
        assert scanner.update("ab") == ("ab", False)
    assert calls == ["a"]
    assert [e["event"] for e in logs] == ["text_sink_failed"]


# --- the real tiny model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def generator(tiny_model: TinyModel) -> OnnxGenerator:
    """The int4 device folder, loaded once for this module."""
    return OnnxGenerator.load(tiny_model.int4_dir, threads=2)


@pytest.fixture
def folder_copy(tiny_model: TinyModel, tmp_path: Path) -> Path:
    """A private copy of the int4 folder that a test may damage."""
    return Path(shutil.copytree(tiny_model.int4_dir, tmp_path / "int4"))


def _edit_manifest(folder: Path, **changes: object) -> None:
    manifest = replace(Manifest.from_dir(folder), **changes)  # type: ignore[arg-type]
    (folder / "manifest.json").write_text(manifest.to_json())


@pytest.mark.slow
def test_greedy_generation_equals_a_no_cache_reference(
    generator: OnnxGenerator, tiny_model: TinyModel
) -> None:
    harness = OnnxHarness(tiny_model.int4_dir)
    eos = set(generator.manifest.eos_token_ids)
    seen: set[int] = set()
    for user in PROMPTS:
        prompt = generator.render(user)
        result = generator.generate(GenerationRequest(prompt, max_new_tokens=24))
        ids = generator.encode(prompt)
        expected, reason = harness.greedy_without_cache(ids, 24, eos)
        assert result.prompt_tokens == len(ids)
        assert result.new_tokens == len(expected)
        assert result.stop_reason == reason
        assert result.text == generator.decode(expected)
        seen.update(expected)
    # Guard against a degenerate model that would make the comparison vacuous.
    assert len(seen) >= 4


@pytest.mark.slow
def test_max_new_tokens_is_honoured(generator: OnnxGenerator) -> None:
    result = generator.generate(GenerationRequest(generator.render("Hello."), max_new_tokens=5))
    assert (result.new_tokens, result.stop_reason) == (5, "max_new_tokens")
    assert result.latency_s > 0


@pytest.mark.slow
def test_an_expired_deadline_stops_cleanly(generator: OnnxGenerator) -> None:
    request = GenerationRequest(generator.render("Hello."), max_new_tokens=50, deadline_s=0.0)
    result = generator.generate(request)
    assert result.stop_reason == "deadline"
    # The prefill's token is already paid for, so it is kept; nothing more is computed.
    assert result.new_tokens == 1
    assert result.text


@pytest.mark.slow
def test_a_prompt_longer_than_the_context_overflows(generator: OnnxGenerator) -> None:
    context = generator.manifest.context_length
    with pytest.raises(ContextOverflowError, match=f"context is {context}"):
        generator.generate(GenerationRequest(generator.render("kitchen " * context)))
    assert issubclass(ContextOverflowError, GenerationError)


@pytest.mark.slow
def test_the_budget_is_capped_by_the_context(generator: OnnxGenerator) -> None:
    context = generator.manifest.context_length
    prompt = "<bos>" + "x" * (context - 4)  # one token per byte of 'x' never merges here
    prompt_tokens = len(generator.encode(prompt))
    assert context - 8 < prompt_tokens < context
    result = generator.generate(GenerationRequest(prompt, max_new_tokens=50))
    assert result.stop_reason in {"max_new_tokens", "eos"}
    assert result.prompt_tokens + result.new_tokens <= context


@pytest.mark.slow
def test_eos_ids_come_from_the_manifest(folder_copy: Path) -> None:
    harness = OnnxHarness(folder_copy)
    plain = OnnxGenerator.load(folder_copy)
    ids = plain.encode(plain.render(PROMPTS[0]))
    expected, _ = harness.greedy_without_cache(ids, 8, set())
    stop_at = expected.index(expected[3])
    _edit_manifest(folder_copy, eos_token_ids=(1, expected[3]))
    result = OnnxGenerator.load(folder_copy).generate(
        GenerationRequest(plain.render(PROMPTS[0]), max_new_tokens=8)
    )
    assert (result.stop_reason, result.new_tokens) == ("eos", stop_at)


@pytest.mark.slow
def test_stop_strings_from_the_folder_or_the_request_cut_the_text(folder_copy: Path) -> None:
    plain = OnnxGenerator.load(folder_copy)
    prompt = plain.render(PROMPTS[1])
    full = plain.generate(GenerationRequest(prompt, 16))
    stop = full.text.strip()[-3:]
    assert stop
    expected = full.text[: full.text.find(stop)]
    per_request = plain.generate(GenerationRequest(prompt, 16, stop=(stop,)))
    _edit_manifest(folder_copy, stop_strings=(stop,))
    from_folder = OnnxGenerator.load(folder_copy).generate(GenerationRequest(prompt, 16))
    for result in (per_request, from_folder):
        assert result.stop_reason == "stop"
        assert result.text == expected
        assert result.new_tokens < full.new_tokens


@pytest.mark.slow
def test_streamed_pieces_add_up_to_the_result(generator: OnnxGenerator) -> None:
    prompt = generator.render(PROMPTS[1])
    full = generator.generate(GenerationRequest(prompt, 16))
    pieces: list[str] = []
    streamed = generator.generate(GenerationRequest(prompt, 16, on_text=pieces.append))
    assert streamed.text == full.text
    assert "".join(pieces) == full.text
    assert len(pieces) > 1
    stop = full.text.strip()[-3:]
    pieces.clear()
    cut = generator.generate(GenerationRequest(prompt, 16, stop=(stop,), on_text=pieces.append))
    assert "".join(pieces) == cut.text


@pytest.mark.slow
def test_a_kept_prompt_head_is_reused_without_changing_results(tiny_model: TinyModel) -> None:
    fresh = OnnxGenerator.load(tiny_model.int4_dir)
    cached = OnnxGenerator.load(tiny_model.int4_dir)
    head = "Sensor readings follow. Summarise them for the household in one sentence.\n"
    for tail in ("kitchen 21.5 C", "bedroom 18 C, humid", "garage door open"):
        prompt = cached.render(head + tail)
        prefix_chars = prompt.find(head) + len(head)
        want = fresh.generate(GenerationRequest(prompt, 12))
        got = cached.generate(GenerationRequest(prompt, 12, prefix_chars=prefix_chars))
        assert (got.text, got.new_tokens, got.stop_reason) == (
            want.text,
            want.new_tokens,
            want.stop_reason,
        )
        assert got.prompt_tokens == want.prompt_tokens
    kept = cached.cached_prefix_tokens
    assert kept > 10
    # The first request filled the cache; the other two started from it.
    assert cached.reused_tokens_total == 2 * kept
    assert fresh.reused_tokens_total == 0


@pytest.mark.slow
def test_token_counting_and_context_come_from_the_folder(generator: OnnxGenerator) -> None:
    assert generator.context_length == generator.manifest.context_length == 1024
    assert generator.prompt_format == "chat"
    text = "kitchen temperature 21.5 C"
    assert generator.count_tokens(text) == len(generator.encode(text)) > 0
    assert generator.count_tokens("<bos>" + text) == generator.count_tokens(text) + 1


@pytest.mark.slow
def test_model_id_and_template_come_from_the_folder(generator: OnnxGenerator) -> None:
    assert generator.model_id.startswith("gemma2:tiny-random-gemma2@")
    assert generator.render("hi") == TEMPLATE.format(user="hi")


@pytest.mark.slow
def test_load_warms_up_and_routes_onnxruntime_logs(
    tiny_model: TinyModel, capfd: pytest.CaptureFixture[str]
) -> None:
    with capture_logs() as logs:
        OnnxGenerator.load(tiny_model.int4_dir, log_severity=0)
    events = [e["event"] for e in logs]
    assert "model_warmed_up" in events
    ort_lines = [e["line"] for e in logs if e["event"] == "onnxruntime_log"]
    assert ort_lines, "verbose onnxruntime output should be re-emitted through structlog"
    # ...and not also written raw to the process's stderr.
    assert ort_lines[0] not in capfd.readouterr().err


# --- refusing damaged folders --------------------------------------------------------------


@pytest.mark.slow
def test_verify_names_a_truncated_file(folder_copy: Path) -> None:
    data = folder_copy / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ModelVerifyError, match=r"model\.onnx\.data .*checksum") as err:
        verify(folder_copy)
    assert "build-tiny" in str(err.value)


@pytest.mark.slow
def test_verify_with_recorded_sizes_names_the_size_before_hashing(folder_copy: Path) -> None:
    data = folder_copy / "model.onnx.data"
    full = data.stat().st_size
    _edit_manifest(folder_copy, sizes={"model.onnx.data": full})
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ModelVerifyError, match=rf"model\.onnx\.data is 1000 bytes, .* {full}"):
        verify(folder_copy)


@pytest.mark.slow
def test_verify_names_a_tampered_file(folder_copy: Path) -> None:
    tok = folder_copy / "tokenizer.json"
    raw = bytearray(tok.read_bytes())
    raw[100] ^= 0x01
    tok.write_bytes(bytes(raw))
    with pytest.raises(ModelVerifyError, match=r"tokenizer\.json .*checksum"):
        verify(folder_copy)


@pytest.mark.slow
def test_verify_names_a_missing_file(folder_copy: Path) -> None:
    (folder_copy / "tokenizer_config.json").unlink()
    with pytest.raises(ModelVerifyError, match=r"tokenizer_config\.json .*missing"):
        verify(folder_copy)


@pytest.mark.slow
def test_loading_a_folder_that_fails_verification_is_refused(folder_copy: Path) -> None:
    config = folder_copy / "tokenizer_config.json"
    config.write_text(config.read_text() + " ")
    with pytest.raises(ModelVerifyError, match=r"tokenizer_config\.json"):
        OnnxGenerator.load(folder_copy)
    # The runtime does not read that file, so skipping verification loads fine.
    assert OnnxGenerator.load(folder_copy, verify=False).model_id


@pytest.mark.slow
def test_an_unloadable_graph_is_a_model_error(folder_copy: Path) -> None:
    (folder_copy / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        OnnxGenerator.load(folder_copy, verify=False)


@pytest.mark.slow
def test_cli_verify_reports_ok_and_failure(folder_copy: Path) -> None:
    ok = run_cli("model", "verify", str(folder_copy))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"OK {folder_copy}")
    assert "gemma2:tiny-random-gemma2@" in ok.stdout
    (folder_copy / "model.onnx.data").write_bytes(b"")
    bad = run_cli("model", "verify", str(folder_copy))
    assert bad.returncode == 1
    assert "model.onnx.data" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_cli_build_tiny_prints_the_cached_int4_folder(tiny_model: TinyModel) -> None:
    cache_root = tiny_model.root.parent
    result = run_cli("model", "build-tiny", "--out", str(cache_root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(tiny_model.int4_dir)


@pytest.mark.slow
def test_the_configured_context_caps_the_folders(tiny_model: TinyModel) -> None:
    small = OnnxGenerator.load(tiny_model.int4_dir, context_tokens=64)
    assert small.context_length == 64
    with pytest.raises(ContextOverflowError):
        small.generate(GenerationRequest(small.render("warm " * 80), 4))
    # More than the folder allows is capped at the folder's own context.
    assert OnnxGenerator.load(tiny_model.int4_dir, context_tokens=4096).context_length == 1024
