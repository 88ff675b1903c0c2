"""A Generator over an OpenAI-compatible server (Ollama, llama-server, vLLM, LocalAI).

The model runs elsewhere; the facts, the prompt budget, the grounding check and the
fallback stay on the device, above this interface. Requests stream over server-sent
events (httpx + httpx-sse, both pure Python) into the same ``on_text`` callback the
on-device runtime feeds. A failure is a :class:`BackendError` whose ``reason`` becomes
the summary's fallback reason; the worker thread is never left waiting past the
request's deadline.

Retries: connection failures, timeouts before the first piece of text, HTTP 429 and
5xx are retried with full-jitter exponential backoff while the deadline allows. Once
the server is known to be down (the last request failed that way) a request is tried
once, so summaries fall back at once instead of each waiting out its retries; the
first request that gets through marks it up again.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import structlog
from httpx_sse import SSEError, connect_sse

from edge_agent.errors import BackendError, BackendUnreachableError, GenerationError
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.llm.gbnf import UnsupportedSchemaError, schema_to_gbnf
from edge_agent.llm.openai_probe import Api, estimate_tokens, guess_api, probe_server
from edge_agent.llm.stream import StopScanner

log = structlog.get_logger(__name__)

_RETRYABLE = frozenset({"backend_unavailable", "backend_timeout"})
_FINISH = {"stop": "eos", "length": "max_new_tokens", "eos": "eos"}


@dataclass(frozen=True, slots=True)
class OpenAIOptions:
    """Plain values from the model settings."""

    base_url: str
    model: str
    api: Literal["auto", "completions", "chat"] = "auto"
    api_key: str | None = None
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 30.0
    retries: int = 2
    context_tokens: int = 2048
    """The context when the server reports none."""
    backoff_s: float = 0.5
    """First retry's upper bound; doubles per retry (full jitter)."""


@dataclass(slots=True)
class BackendHealth:
    """The server as the last requests saw it (read by the status topic and metrics)."""

    up: bool = True
    since: float = 0.0
    """Wall-clock time of the last change."""
    last_error: str | None = None
    requests_total: int = 0
    failures_total: int = 0
    retries_total: int = 0

    def as_dict(self) -> dict[str, object]:
        """For the status payload."""
        return {
            "state": "up" if self.up else "down",
            "since": round(self.since, 1),
            "last_error": self.last_error,
            "requests_total": self.requests_total,
            "failures_total": self.failures_total,
            "retries_total": self.retries_total,
        }


class OpenAIGenerator:
    """Generates through ``/v1/completions`` or ``/v1/chat/completions``; one call at a time."""

    def __init__(
        self,
        client: httpx.Client,
        options: OpenAIOptions,
        *,
        api: Api,
        context_length: int,
        token_scale: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._opt = options
        self.api: Api = api
        self._context = context_length
        self._scale = token_scale
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._streamed = 0
        """Pieces of text the last attempt passed on before it failed."""
        self.health = BackendHealth(since=time.time())

    @classmethod
    def connect(
        cls, options: OpenAIOptions, *, transport: httpx.BaseTransport | None = None
    ) -> OpenAIGenerator:
        """Probe the server (``GET /v1/models``) and learn its context and tokens.

        Raises :class:`StartupError` with one line when the server does not serve
        ``options.model``. An unreachable server is not fatal: the generator starts
        marked down (every summary falls back) and recovers when the server answers,
        without the context and token calibration the probe would have read.
        ``transport`` is for tests (httpx's mock).
        """
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(options.read_timeout_s, connect=options.connect_timeout_s),
            transport=transport,
        )
        api: Api = guess_api(options.model) if options.api == "auto" else options.api
        try:
            facts = probe_server(client, options.base_url, options.model)
        except BackendUnreachableError as exc:
            # A NAS asleep at boot must not keep the device down: the facts, anomalies and
            # fallback summaries still work, and the first request that gets through
            # brings the model text back. A wrong model name, by contrast, stops start-up.
            generator = cls(client, options, api=api, context_length=options.context_tokens)
            generator._failed(BackendError("backend_unavailable", str(exc)))
            log.error("backend_unreachable_at_start", error=str(exc), api=api)
            return generator
        generator = cls(
            client,
            options,
            api=api,
            context_length=facts.context_length or options.context_tokens,
            token_scale=facts.token_scale,
        )
        log.info(
            "model_ready",
            backend="openai",
            model=generator.model_id,
            base_url=options.base_url,
            api=api,
            api_from="setting" if options.api != "auto" else "name",
            context_length=generator.context_length,
            context_from=facts.context_source,
            tokens_from=facts.tokenizer,
            token_scale=round(facts.token_scale, 3),
            load_s=round(time.monotonic() - started, 3),
        )
        return generator

    @property
    def model_id(self) -> str:
        """``openai:<model>@<host:port>``: which model on which server wrote a summary."""
        return f"openai:{self._opt.model}@{urlsplit(self._opt.base_url).netloc}"

    @property
    def prompt_format(self) -> Literal["chat", "completion"]:
        """``completion`` (few-shot) for the completions API, ``chat`` for chat."""
        return "chat" if self.api == "chat" else "completion"

    @property
    def context_length(self) -> int:
        """The server's reported context, else ``model.context_tokens``."""
        return self._context

    def count_tokens(self, text: str) -> int:
        """A local estimate, scaled by the start-up calibration against the server.

        The budget code calls this many times per prompt on the event loop, so it
        never goes over the network (see :mod:`edge_agent.llm.openai_probe`).
        """
        return math.ceil(estimate_tokens(text) * self._scale)

    def render(self, user: str) -> str:
        """The text as is: the server applies the chat template (or none, for completions)."""
        return user

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def generate(self, request: GenerationRequest) -> Generation:
        """Stream one reply; retry transient failures within the deadline.

        Raises :class:`BackendError` (reason in ``.reason``) when the server cannot
        give one, and GenerationError for a request this backend cannot serve.
        """
        if request.logits_processor is not None and request.json_schema is None:
            raise GenerationError("the openai backend cannot apply a logits processor")
        with self._lock:
            return self._generate(request)

    def _generate(self, request: GenerationRequest) -> Generation:
        started = time.monotonic()
        attempts = 1 + (self._opt.retries if self.health.up else 0)
        self.health.requests_total += 1
        for attempt in range(attempts):
            try:
                result = self._stream(request, started)
            except BackendError as exc:
                # Text already streamed to listeners cannot be taken back: no retry then.
                retry = exc.reason in _RETRYABLE and attempt + 1 < attempts and not self._streamed
                pause = self._rng.uniform(0, self._opt.backoff_s * 2**attempt)
                left = _left(request, started)
                if retry and (left is None or pause + self._opt.connect_timeout_s < left):
                    self.health.retries_total += 1
                    log.info("backend_retry", reason=exc.reason, attempt=attempt + 1, pause_s=pause)
                    time.sleep(pause)
                    continue
                self._failed(exc)
                raise
            self._succeeded()
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _stream(self, request: GenerationRequest, started: float) -> Generation:
        body, url = self._body(request)
        self._streamed = 0
        scanner = StopScanner(request.stop, request.on_text)
        text, reason, pieces = "", "max_new_tokens", 0
        usage: Mapping[str, Any] = {}
        left = _left(request, started)
        if left is not None and left <= 0:
            raise BackendError("backend_timeout", "the deadline passed before the request")
        read = self._opt.read_timeout_s if left is None else min(self._opt.read_timeout_s, left)
        timeout = httpx.Timeout(read, connect=self._opt.connect_timeout_s)
        try:
            with connect_sse(self._client, "POST", url, json=body, timeout=timeout) as source:
                _check_status(source.response)
                for data in _events(source.iter_sse()):
                    piece, finish, got_usage = self._parse(data)
                    usage = got_usage or usage
                    if piece:
                        pieces += 1
                        text, stopped = scanner.update(text + piece)
                        if stopped:
                            reason = "stop"
                            break
                    if finish is not None:
                        reason = _FINISH.get(finish, "eos")
                    if (left := _left(request, started)) is not None and left <= 0:
                        reason = "deadline"
                        break
        except httpx.TimeoutException as exc:
            self._streamed = pieces
            late = (left := _left(request, started)) is not None and left <= 0
            if not (pieces and late):
                detail = f"{type(exc).__name__} after {pieces} pieces"
                raise BackendError("backend_timeout", detail) from exc
            reason = "deadline"  # text came, but too slowly: the narrator rejects it
        except (httpx.TransportError, httpx.StreamError) as exc:
            self._streamed = pieces
            raise BackendError("backend_unavailable", f"{type(exc).__name__}: {exc}") from exc
        except SSEError as exc:
            raise BackendError("backend_bad_response", f"not an event stream: {exc}") from exc
        except BackendError:
            self._streamed = pieces
            raise
        if reason != "stop":
            scanner.finish(text)
        latency = time.monotonic() - started
        prompt_tokens = _int(usage.get("prompt_tokens")) or self.count_tokens(request.prompt)
        new_tokens = _int(usage.get("completion_tokens")) or pieces
        return Generation(text, prompt_tokens, new_tokens, reason, latency)

    def _body(self, request: GenerationRequest) -> tuple[dict[str, Any], str]:
        room = self._context - self.count_tokens(request.prompt)
        s = request.sampling
        body: dict[str, Any] = {
            "model": self._opt.model,
            "max_tokens": max(1, min(request.max_new_tokens, room)),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if s.seed is not None:
            body["seed"] = s.seed
        if s.top_k:
            body["top_k"] = s.top_k  # llama.cpp, vLLM, Ollama; others ignore it
        if s.repetition_penalty != 1.0:
            body["repeat_penalty"] = s.repetition_penalty
        base = self._opt.base_url.rstrip("/")
        if request.json_schema is not None:
            schema = dict(request.json_schema)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": True},
            }
            if self.api == "completions":
                # llama.cpp's servers constrain completions by a GBNF grammar (the C++
                # server also by "json_schema", but refuses both at once).
                try:
                    body["grammar"] = schema_to_gbnf(schema)
                except UnsupportedSchemaError:
                    body["json_schema"] = schema
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
            return body, f"{base}/chat/completions"
        body["prompt"] = request.prompt
        return body, f"{base}/completions"

    def _parse(self, data: str) -> tuple[str, str | None, Mapping[str, Any] | None]:
        """(text piece, finish reason, usage) of one streamed chunk."""
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise BackendError("backend_bad_response", f"chunk is not JSON: {data[:80]!r}") from exc
        if not isinstance(chunk, dict):
            raise BackendError("backend_bad_response", f"chunk is not an object: {data[:80]!r}")
        if "error" in chunk:
            raise BackendError("backend_rejected", f"error in stream: {str(chunk['error'])[:200]}")
        usage = chunk.get("usage") if isinstance(chunk.get("usage"), dict) else None
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return "", None, usage
        choice = choices[0]
        if not isinstance(choice, dict):
            raise BackendError("backend_bad_response", "a choice is not an object")
        if self.api == "chat":
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else None
        else:
            piece = choice.get("text")
        if piece is not None and not isinstance(piece, str):
            raise BackendError("backend_bad_response", "the text is not a string")
        finish = choice.get("finish_reason")
        return piece or "", finish if isinstance(finish, str) else None, usage

    def supports_json_schema(self) -> bool:
        """Whether the server constrains output to a JSON schema (one tiny request).

        A server that ignores ``response_format`` writes whatever it likes; one that
        honours it writes the one allowed document.
        """
        schema = {
            "type": "object",
            "properties": {"light": {"type": "string", "enum": ["on", "off"]}},
            "required": ["light"],
            "additionalProperties": False,
        }
        prompt = "Reply with the word hello.\n" if self.api == "chat" else "Hello, world.\n"
        try:
            result = self.generate(
                GenerationRequest(prompt=prompt, max_new_tokens=24, json_schema=schema)
            )
            doc = json.loads(result.text)
        except (GenerationError, ValueError) as exc:
            log.info("backend_json_schema_probe", ok=False, error=str(exc)[:200])
            return False
        ok = isinstance(doc, dict) and set(doc) == {"light"} and doc["light"] in ("on", "off")
        log.info("backend_json_schema_probe", ok=ok, text=result.text[:200])
        return ok

    def _failed(self, exc: BackendError) -> None:
        h = self.health
        h.failures_total += 1
        h.last_error = str(exc)[:300]
        if exc.reason in _RETRYABLE and h.up:
            h.up, h.since = False, time.time()
            log.warning("backend_down", reason=exc.reason, error=h.last_error)

    def _succeeded(self) -> None:
        h = self.health
        if not h.up:
            h.up, h.since = True, time.time()
            log.info("backend_up", down_error=h.last_error)


def _events(events: Iterator[Any]) -> Iterator[str]:
    """The data of each server-sent event until ``[DONE]`` (comments and pings skipped)."""
    for event in events:
        data = event.data
        if not data:
            continue
        if data.strip() == "[DONE]":
            return
        yield data


def _check_status(response: httpx.Response) -> None:
    if response.status_code == 200:
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            # Some servers answer a stream request with one JSON body.
            body = response.read()[:200].decode(errors="replace")
            raise BackendError("backend_bad_response", f"{content_type or 'no type'}: {body!r}")
        return
    detail = f"HTTP {response.status_code}: {response.read()[:200].decode(errors='replace')}"
    if response.status_code == 404:
        raise BackendError("backend_model_missing", detail)
    if response.status_code == 429 or response.status_code >= 500:
        raise BackendError("backend_unavailable", detail)
    raise BackendError("backend_rejected", detail)


def _left(request: GenerationRequest, started: float) -> float | None:
    if request.deadline_s is None:
        return None
    return request.deadline_s - (time.monotonic() - started)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
