"""Start-up facts about an OpenAI-compatible server: is the model there, its context, its tokens.

Servers differ beyond the OpenAI core, so every probe here is best effort and says
what it found: llama.cpp's ``llama-server`` reports its context in ``/props`` and
tokenizes on ``/tokenize``; llama-cpp-python's server tokenizes on ``/extras/tokenize``;
vLLM reports ``max_model_len`` in ``/v1/models`` and tokenizes on ``/tokenize``;
Ollama and LocalAI report neither, so the settings' context and a conservative local
estimate of tokens apply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog

from edge_agent.errors import BackendUnreachableError, StartupError

log = structlog.get_logger(__name__)

Api = Literal["completions", "chat"]

# Calibration text: the kinds of lines our prompts carry (readings with decimals,
# units, prose), so the measured ratio holds for the prompts the budget counts.
_SAMPLES = (
    "Readings:\n- kitchen/fridge temperature: now 4.53 °C, min 4.1, max 4.92, rising 0.2 "
    "per hour\n- living room co2: now 1215 ppm, min 610, max 1250\n- hall door: now 1, "
    "changed 3 times\nSummary:",
    "The office is at 22.4 °C and slowly warming; CO2 is fine at 640 ppm. Answer in one "
    "short sentence, using only the readings below. Write every number as it is given.",
)
# Headroom on the calibrated ratio: the samples are not the prompt.
_MARGIN = 1.15
_CHAT_HINT = re.compile(r"(^|[-_.:/ ])(it|instruct|chat|qat)([-_.:/ ]|$)", re.IGNORECASE)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free count that errs high for our prompts.

    Every digit and every non-ASCII character counts as a token (Gemma's and Llama 2's
    tokenizers split digits; '°' is one or two), the other characters one per three
    (English subwords average about four characters in Gemma's vocabulary).
    """
    digits = sum(c.isdigit() for c in text)
    wide = sum(not c.isascii() for c in text)
    return digits + wide + math.ceil((len(text) - digits - wide) / 3)


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the start-up probe learned."""

    models: tuple[str, ...]
    context_length: int | None
    """The server's context per request, if it reports one."""
    context_source: str
    token_scale: float
    """Multiplier on :func:`estimate_tokens` measured against the server's tokenizer (1.0
    when the server has no tokenize endpoint)."""
    tokenizer: str
    """Which endpoint calibrated ``token_scale``, or 'estimate'."""


def root_of(base_url: str) -> str:
    """The server root for non-OpenAI endpoints: ``http://h:8080/v1`` -> ``http://h:8080``."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def list_models(client: httpx.Client, base_url: str) -> list[dict[str, Any]]:
    """``GET /v1/models``; StartupError with one line when the server cannot answer."""
    url = f"{base_url.rstrip('/')}/models"
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise BackendUnreachableError(
            f"model server {base_url} unreachable ({type(exc).__name__}: {exc}); check "
            "model.base_url and that the server runs"
        ) from exc
    if response.status_code in (401, 403):
        raise StartupError(
            f"model server {base_url} refused the API key (HTTP {response.status_code}); "
            "check model.api_key_file"
        )
    if response.status_code != 200:
        raise StartupError(f"model server {url} answered HTTP {response.status_code}")
    try:
        data = response.json()["data"]
        if not isinstance(data, list):
            raise TypeError("'data' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"{url} is not an OpenAI-compatible model list: {exc}") from exc
    return [m for m in data if isinstance(m, dict)]


def probe_server(client: httpx.Client, base_url: str, model: str) -> ServerFacts:
    """Check that ``model`` is served, and learn the context length and token ratio."""
    listed = list_models(client, base_url)
    ids = tuple(str(m.get("id", "")) for m in listed)
    entry = _find(listed, model)
    if entry is None:
        shown = ", ".join(ids[:8]) or "none"
        raise StartupError(
            f"model {model!r} is not on the server {base_url} (it serves: {shown}); "
            "set model.name to one of those, or load it there (e.g. `ollama pull`)"
        )
    context, source = _context(client, base_url, entry)
    scale, tokenizer = _calibrate(client, base_url, model)
    return ServerFacts(ids, context, source, scale, tokenizer)


def guess_api(model: str) -> Api:
    """``chat`` for names that read as instruction-tuned, else ``completions``.

    '-it', 'instruct', 'chat' name tuned checkpoints on Hugging Face and in GGUF files;
    an Ollama tag ('gemma2:2b') names its instruction-tuned build unless it says 'text'.
    """
    base = model.rsplit("/", 1)[-1]
    if _CHAT_HINT.search(base):
        return "chat"
    if ":" in base and "text" not in base.split(":", 1)[1].lower():
        return "chat"
    return "completions"


def _find(models: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for entry in models:
        if entry.get("id") == name:
            return entry
    # Ollama lists 'gemma2:2b'; 'gemma2' means its ':latest'.
    for entry in models:
        if str(entry.get("id", "")) == f"{name}:latest":
            return entry
    return None


def _context(client: httpx.Client, base_url: str, entry: dict[str, Any]) -> tuple[int | None, str]:
    props = _get_json(client, f"{root_of(base_url)}/props")
    if isinstance(props, dict):
        settings = props.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
        n_ctx = n_ctx if isinstance(n_ctx, int) else props.get("n_ctx")
        if isinstance(n_ctx, int) and n_ctx > 0:
            return n_ctx, "/props"
    if isinstance(entry.get("max_model_len"), int):  # vLLM
        return int(entry["max_model_len"]), "/v1/models max_model_len"
    meta = entry.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("n_ctx"), int):
        return int(meta["n_ctx"]), "/v1/models meta.n_ctx"
    return None, "setting"


def _calibrate(client: httpx.Client, base_url: str, model: str) -> tuple[float, str]:
    root = root_of(base_url)
    ratios: list[float] = []
    used = "estimate"
    for path, body_key in (("/tokenize", "content"), ("/extras/tokenize", "input")):
        ratios = []
        for sample in _SAMPLES:
            body = {body_key: sample, "prompt": sample, "model": model, "add_special": False}
            count = _token_count(_post_json(client, f"{root}{path}", body))
            if count is None:
                break
            ratios.append(count / estimate_tokens(sample))
        if len(ratios) == len(_SAMPLES):
            used = path
            break
    if not ratios:
        return 1.0, used
    return max(ratios) * _MARGIN, used


def _token_count(doc: object) -> int | None:
    if not isinstance(doc, dict):
        return None
    tokens, count = doc.get("tokens"), doc.get("count")
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    return count if isinstance(count, int) and count > 0 else None


def _get_json(client: httpx.Client, url: str) -> object:
    try:
        response = client.get(url)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _post_json(client: httpx.Client, url: str, body: dict[str, Any]) -> object:
    try:
        response = client.post(url, json=body)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
