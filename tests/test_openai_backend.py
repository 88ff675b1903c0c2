"""The OpenAI-compatible Generator against scripted servers (httpx's mock transport).

The wire formats here are the ones llama.cpp's server, Ollama and vLLM send; the real
llama.cpp server runs in tests/test_openai_server.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import httpx
import pytest
from structlog.testing import capture_logs

from edge_agent.errors import BackendError, GenerationError, StartupError
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.openai_backend import OpenAIGenerator, OpenAIOptions
from edge_agent.llm.openai_probe import estimate_tokens, guess_api

Handler = Callable[[httpx.Request], httpx.Response]
BASE = "http://models.test:8080/v1"


def sse(*chunks: object, done: bool = True) -> httpx.Response:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    body += "data: [DONE]\n\n" if done else ""
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)


def text_chunk(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}


def server(routes: dict[str, Handler], models: tuple[str, ...] = ("gemma",)) -> Handler:
    """A server that lists ``models`` and answers ``routes`` (path -> handler)."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in routes:
            return routes[path](request)
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": m} for m in models]})
        return httpx.Response(404, json={"error": "not found"})

    return handle


def connect(handler: Handler, **options: object) -> OpenAIGenerator:
    opts = OpenAIOptions(base_url=BASE, model="gemma", backoff_s=0.001, **options)  # type: ignore[arg-type]
    gen = OpenAIGenerator.connect(opts, transport=httpx.MockTransport(handler))
    gen._rng = random.Random(0)
    return gen


def test_completions_stream_into_the_callback_with_the_servers_usage() -> None:
    sent: list[dict[str, object]] = []

    def complete(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return sse(
            text_chunk("The kitchen"),
            text_chunk(" is at 21.5 °C."),
            text_chunk("", "stop"),
            {"choices": [], "usage": {"prompt_tokens": 57, "completion_tokens": 9}},
        )

    gen = connect(server({"/v1/completions": complete}))
    deltas: list[str] = []
    result = gen.generate(
        GenerationRequest("Readings: ...\nSummary:", max_new_tokens=40, on_text=deltas.append)
    )
    assert result.text == "The kitchen is at 21.5 °C."
    assert "".join(deltas) == result.text
    assert (result.prompt_tokens, result.new_tokens, result.stop_reason) == (57, 9, "eos")
    assert sent[0]["prompt"] == "Readings: ...\nSummary:"
    assert sent[0]["stream"] is True
    assert sent[0]["max_tokens"] == 40
    assert gen.prompt_format == "completion"
    assert gen.render("x") == "x"
    assert gen.health.up
    assert gen.health.requests_total == 1


def test_a_stop_string_cuts_the_text_even_if_the_server_ignores_it() -> None:
    routes = {"/v1/completions": lambda _r: sse(text_chunk("Warm.\n"), text_chunk("\nReadings:"))}
    gen = connect(server(routes))
    deltas: list[str] = []
    result = gen.generate(GenerationRequest("p", stop=("\n\n",), on_text=deltas.append))
    assert (result.text, result.stop_reason) == ("Warm.", "stop")
    assert "".join(deltas) == "Warm."


def test_chat_api_reads_deltas() -> None:
    sent: list[dict[str, object]] = []

    def chat(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return sse(
            {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]},
            {"choices": [{"delta": {"content": "Fine."}, "finish_reason": "length"}]},
        )

    gen = connect(server({"/v1/chat/completions": chat}), api="chat")
    result = gen.generate(GenerationRequest("How warm is it?"))
    assert (result.text, result.stop_reason, result.new_tokens) == ("Fine.", "max_new_tokens", 1)
    assert sent[0]["messages"] == [{"role": "user", "content": "How warm is it?"}]
    assert gen.prompt_format == "chat"


def test_transient_failures_are_retried_then_succeed() -> None:
    calls = iter([httpx.Response(503, text="loading model"), None])

    def flaky(request: httpx.Request) -> httpx.Response:
        failure = next(calls)
        if failure is not None:
            return failure
        return sse(text_chunk("Ok.", "stop"))

    gen = connect(server({"/v1/completions": flaky}), retries=2)
    assert gen.generate(GenerationRequest("p", deadline_s=10)).text == "Ok."
    assert gen.health.retries_total == 1
    assert gen.health.up


def test_a_dead_server_fails_fast_once_known_down_and_recovers() -> None:
    state = {"up": False, "calls": 0}

    def complete(request: httpx.Request) -> httpx.Response:
        state["calls"] += 1
        if not state["up"]:
            raise httpx.ConnectError("connection refused", request=request)
        return sse(text_chunk("Back.", "stop"))

    gen = connect(server({"/v1/completions": complete}), retries=2)
    with pytest.raises(BackendError) as first:
        gen.generate(GenerationRequest("p", deadline_s=10))
    assert first.value.reason == "backend_unavailable"
    assert state["calls"] == 3  # the first try and two retries
    assert not gen.health.up
    with pytest.raises(BackendError):
        gen.generate(GenerationRequest("p", deadline_s=10))
    assert state["calls"] == 4  # known down: one try, no retries
    state["up"] = True
    assert gen.generate(GenerationRequest("p", deadline_s=10)).text == "Back."
    assert gen.health.up
    assert gen.health.failures_total == 2


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(200, headers={"content-type": "text/event-stream"}, text="data: {oops\n\n"),
         "backend_bad_response"),
        (httpx.Response(200, json={"choices": []}), "backend_bad_response"),
        (sse({"choices": [{"text": 42}]}), "backend_bad_response"),
        (sse({"error": {"message": "context overflow"}}), "backend_rejected"),
        (httpx.Response(400, json={"error": "too long"}), "backend_rejected"),
        (httpx.Response(404, json={"error": "no such model"}), "backend_model_missing"),
    ],
)  # fmt: skip
def test_nonsense_is_a_backend_error_with_its_reason(response: httpx.Response, reason: str) -> None:
    gen = connect(server({"/v1/completions": lambda _r: response}), retries=0)
    with pytest.raises(BackendError) as err:
        gen.generate(GenerationRequest("p"))
    assert err.value.reason == reason


def test_a_server_that_stalls_times_out() -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    gen = connect(server({"/v1/completions": stall}), retries=0)
    with pytest.raises(BackendError) as err:
        gen.generate(GenerationRequest("p", deadline_s=5))
    assert err.value.reason == "backend_timeout"


def test_start_up_names_the_missing_model_in_one_line() -> None:
    with pytest.raises(StartupError) as err:
        connect(server({}, models=("llama3.2:1b", "qwen2.5:0.5b")))
    message = str(err.value)
    assert "\n" not in message
    assert "'gemma' is not on the server" in message
    assert "llama3.2:1b" in message


def test_an_unreachable_server_at_start_up_starts_down_and_recovers() -> None:
    up = {"now": False}

    def handle(request: httpx.Request) -> httpx.Response:
        if not up["now"]:
            raise httpx.ConnectError("connection refused", request=request)
        return server({"/v1/completions": lambda _r: sse(text_chunk("Up.", "stop"))})(request)

    with capture_logs() as logs:
        gen = connect(handle, context_tokens=1024)
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "backend_unreachable_at_start"
    ]
    assert not gen.health.up
    assert gen.context_length == 1024
    with pytest.raises(BackendError):
        gen.generate(GenerationRequest("p"))
    up["now"] = True
    assert gen.generate(GenerationRequest("p")).text == "Up."
    assert gen.health.up


def test_context_and_token_ratio_come_from_llama_cpp_when_it_reports_them() -> None:
    def props(_r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"default_generation_settings": {"n_ctx": 4096}})

    def tokenize(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["content"]
        return httpx.Response(200, json={"tokens": list(range(len(text) // 4))})

    gen = connect(server({"/props": props, "/tokenize": tokenize}), context_tokens=1024)
    assert gen.context_length == 4096
    sample = "- kitchen temperature: now 21.5 °C, min 20.1, max 22.9\n" * 10
    # Calibrated below the raw estimate (4 chars per token), with headroom above it.
    assert len(sample) // 4 <= gen.count_tokens(sample) < estimate_tokens(sample)


def test_without_reports_the_settings_context_and_the_estimate_apply() -> None:
    gen = connect(server({}), context_tokens=1024)
    assert gen.context_length == 1024
    # 3 digits, "°", and ". C" (with the space) at one token per three characters.
    assert gen.count_tokens("21.5 °C") == estimate_tokens("21.5 °C") == 3 + 1 + 1


def test_a_json_schema_goes_in_response_format_and_for_llama_cpp_completions() -> None:
    sent: list[dict[str, object]] = []

    def complete(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return sse(text_chunk('{"light": "on"}', "stop"))

    gen = connect(server({"/v1/completions": complete}))
    assert gen.supports_json_schema()
    body = sent[0]
    assert body["response_format"]["type"] == "json_schema"  # type: ignore[index]
    schema = body["response_format"]["json_schema"]["schema"]  # type: ignore[index]
    assert schema["required"] == ["light"]
    # llama.cpp's servers constrain completions by grammar; never both it and json_schema.
    assert str(body["grammar"]).startswith("root ::= ")
    assert "json_schema" not in body


def test_a_server_that_ignores_the_schema_is_detected() -> None:
    routes = {"/v1/completions": lambda _r: sse(text_chunk("Hello there!", "stop"))}
    assert not connect(server(routes)).supports_json_schema()


def test_a_logits_processor_without_a_schema_is_refused() -> None:
    gen = connect(server({}))
    with pytest.raises(GenerationError, match="logits processor"):
        gen.generate(GenerationRequest("p", logits_processor=lambda _g, logits: logits))


def test_the_api_key_is_sent_as_a_bearer_token() -> None:
    seen: list[str | None] = []

    def models(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"data": [{"id": "gemma"}]})

    connect(server({"/v1/models": models}), api_key="s3cret")
    assert seen == ["Bearer s3cret"]


@pytest.mark.parametrize(
    ("name", "api"),
    [
        ("gemma2:2b", "chat"),
        ("llama3.2:1b-text-q4_0", "completions"),
        ("google/gemma-2-2b-it", "chat"),
        ("Qwen/Qwen2.5-1.5B-Instruct", "chat"),
        ("gemma-3-270m-q4_k_m.gguf", "completions"),
        ("meta-llama/Llama-3.2-1B", "completions"),
    ],
)
def test_the_api_is_guessed_from_the_name(name: str, api: str) -> None:
    assert guess_api(name) == api
