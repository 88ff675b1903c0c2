"""Narration, model, Home Assistant and logging settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.settings.base import Section


class SummarySettings(Section):
    """When and how the model narrates the facts."""

    window_s: float = Field(
        300.0, gt=0, description="Length of the rolling window summarised, in seconds."
    )
    interval_s: float = Field(300.0, gt=0, description="Seconds between periodic summaries.")
    max_new_tokens: int = Field(
        96, ge=1, le=4096, description="Upper bound on generated tokens per summary."
    )
    deadline_s: float = Field(
        60.0, gt=0, description="Wall-clock budget for one generation; it stops cleanly after."
    )
    max_backlog: int = Field(
        4, ge=1, le=1000, description="Pending generations kept; when full the oldest is dropped."
    )
    language: str = Field(
        "en",
        pattern=r"^[a-z]{2}$",
        description="Language of summaries and answers, as an ISO 639-1 code (en, fr, de...).",
    )
    home: str = Field(
        "",
        max_length=2000,
        description="A short static description of the home for the prompt "
        "(e.g. 'A two-storey house with a heat pump.'); served from the prefix cache.",
    )
    anomaly_min_interval_s: float = Field(
        120.0,
        ge=0,
        description="Least time between two anomaly-triggered summaries of the same area.",
    )
    stream: bool = Field(
        True, description="Stream tokens to <base>/<node_id>/summary/stream while generating."
    )
    stream_expiry_s: int = Field(
        60, ge=1, description="MQTT 5 message expiry of streamed tokens, in seconds."
    )
    ask_max_new_tokens: int = Field(
        64, ge=1, le=4096, description="Upper bound on generated tokens per answer."
    )
    status_interval_s: float = Field(
        30.0, gt=0, description="Seconds between refreshes of the retained status topic."
    )
    device_names: dict[str, str] = Field(
        default_factory=dict,
        description="Display name per device id as the adapter reports it, e.g. "
        '{ "0x00158d0001a2b3c4" = "Front door" }; default: a humanized id.',
    )
    area_names: dict[str, str] = Field(
        default_factory=dict,
        description='Display name per area, e.g. { living_room = "Living room" }; default: '
        "the area humanized (underscores become spaces, first letter upper case).",
    )


class ModelSettings(Section):
    """Which model folder to load and how to run it."""

    path: Path = Field(
        Path("/var/lib/edge-agent/models/default"),
        description="Model folder (model.onnx, tokenizer.json, manifest.json).",
    )
    threads: int = Field(
        2, ge=1, le=256, description="onnxruntime intra-op threads; leave cores for the rest."
    )
    provider: Literal["CPUExecutionProvider", "CUDAExecutionProvider"] = Field(
        "CPUExecutionProvider", description="onnxruntime execution provider."
    )
    verify: bool = Field(
        True, description="Check the manifest's sha256 of every file before loading."
    )
    context_tokens: int = Field(
        2048,
        ge=64,
        le=131072,
        description="Most tokens (prompt + output) per request, capped by the model's own "
        "context. Sizes the KV cache the runtime keeps in RAM (Gemma 2 2B: about 0.2 MB "
        "per token), so raise it only for long prompts.",
    )
    backend: Literal["onnx", "openai"] = Field(
        "onnx",
        description="'onnx': the model folder at 'path', run on this device; 'openai': an "
        "OpenAI-compatible server (Ollama, llama.cpp's llama-server, vLLM, LocalAI) at "
        "'base_url' (see docs/backends.md). The facts, grounding and fallback stay here.",
    )
    base_url: str = Field(
        "",
        pattern=r"^(https?://\S+)?$",
        description="backend 'openai': the server's API root, e.g. http://nas.lan:11434/v1 "
        "(Ollama) or http://127.0.0.1:8080/v1 (llama-server).",
    )
    name: str = Field(
        "", max_length=200, description="backend 'openai': the model on the server, e.g. gemma2:2b."
    )
    api: Literal["auto", "completions", "chat"] = Field(
        "auto",
        description="backend 'openai': '/v1/completions' for base models (few-shot prompts), "
        "'/v1/chat/completions' for instruction-tuned ones; 'auto' guesses from the name "
        "(-it, instruct, chat, or an Ollama tag mean chat) and logs its choice.",
    )
    api_key_file: Path | None = Field(
        None,
        description="backend 'openai': file holding the API key (sent as a bearer token); a "
        "relative path is read from systemd's $CREDENTIALS_DIRECTORY (LoadCredential). "
        "Never put the key in the config itself.",
    )
    connect_timeout_s: float = Field(
        3.0, gt=0, le=120, description="backend 'openai': seconds to open a connection."
    )
    read_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="backend 'openai': most seconds between two streamed pieces of a reply.",
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description="backend 'openai': retries of a failed request (jittered backoff, within "
        "summary.deadline_s); none while the server is known to be down.",
    )

    draft: bool = Field(
        True,
        description="Prompt-lookup drafting: guess the next tokens from earlier text (the "
        "prompt's names, numbers and phrases) and verify them in one forward pass. Greedy "
        "output is unchanged token for token; sampling decodes without it. Needs a folder "
        "exported with --verify-positions above 1.",
    )
    draft_max_tokens: int = Field(
        0,
        ge=0,
        le=64,
        description="Most drafted tokens per forward pass; 0 = the folder's verify "
        "positions minus one.",
    )
    draft_ngram_min: int = Field(
        1, ge=1, le=8, description="Shortest tail (in tokens) looked up to draft from."
    )
    draft_ngram_max: int = Field(
        3, ge=1, le=8, description="Longest tail (in tokens) looked up to draft from."
    )
    draft_short_match_tokens: int = Field(
        1,
        ge=0,
        le=64,
        description="Most drafted tokens when only the last token matched earlier text "
        "(weak evidence); 0 = as many as a longer match.",
    )
    draft_history_tokens: int = Field(
        2048,
        ge=0,
        le=1_000_000,
        description="Tokens of recent outputs remembered to draft from: the service "
        "narrates the same rooms in the same phrases, many of them not in the next "
        "prompt. Changes speed only, never the text; 0 = draft from the prompt only.",
    )

    @model_validator(mode="after")
    def _check_backend(self) -> ModelSettings:
        if self.backend == "openai" and not (self.base_url and self.name):
            raise ValueError("backend 'openai' needs model.base_url and model.name")
        return self


class HomeAssistantSettings(Section):
    """How edge-agent appears in Home Assistant through MQTT discovery."""

    enabled: bool = Field(True, description="Publish MQTT discovery for Home Assistant.")
    discovery_prefix: str = Field(
        "homeassistant", min_length=1, description="Home Assistant's MQTT discovery prefix."
    )
    discovery_mode: Literal["device", "component"] = Field(
        "device",
        description="'device': one device-based discovery message (Home Assistant 2024.11+); "
        "'component': one message per entity, for older releases.",
    )
    birth_jitter_s: float = Field(
        3.0,
        ge=0,
        le=60,
        description="Upper bound of the random delay before re-publishing discovery after "
        "Home Assistant's birth message, so a fleet does not answer all at once.",
    )


class LogSettings(Section):
    """Logging output."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Minimum level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="'auto' writes JSON lines unless stdout is a terminal."
    )
