"""Typed settings: a TOML file overridden by ``EDGE_AGENT_*`` environment variables.

Only the CLI builds a :class:`Settings`; every component receives its own section or
plain values, never the whole object.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge_agent.errors import ConfigError

ENV_PREFIX = "EDGE_AGENT_"


class Section(BaseModel):
    """A config section: frozen, and unknown keys are an error (typos must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(Section):
    """How to reach the broker and where our own topics live."""

    host: str = Field("127.0.0.1", description="Broker host name or IP address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port.")
    client_id: str = Field(
        "",
        description="MQTT client id; empty means 'edge-agent-<node_id>', stable across restarts.",
    )
    username: str | None = Field(None, description="Broker user name, if it requires login.")
    password: SecretStr | None = Field(
        None, description="Broker password. Prefer password_file on devices."
    )
    password_file: Path | None = Field(
        None,
        description="File holding the broker password (e.g. a systemd credential); "
        "read at start-up and wins over password.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive in seconds.")
    base_topic: str = Field(
        "edge-agent",
        min_length=1,
        description="Prefix of every topic we publish: <base_topic>/<node_id>/...",
    )
    node_id: str = Field(
        "edge-agent",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="This device's id; letters, digits, '_' and '-' (also used by Home Assistant).",
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of our subscriptions and publishes.")

    @property
    def effective_client_id(self) -> str:
        """The client id to use: the configured one or one derived from the node id."""
        return self.client_id or f"edge-agent-{self.node_id}"

    def topic(self, leaf: str) -> str:
        """Our own topic ``<base_topic>/<node_id>/<leaf>``."""
        return f"{self.base_topic}/{self.node_id}/{leaf}"


class Subscription(Section):
    """One subscribed topic filter and the payload adapter that parses it."""

    topic: str = Field(description="MQTT topic filter, wildcards allowed, e.g. 'zigbee2mqtt/#'.")
    adapter: Literal["zigbee2mqtt"] = Field(
        "zigbee2mqtt", description="Payload adapter that turns messages into sensor events."
    )
    area: str | None = Field(None, description="Area for devices on this topic, if not known.")


class SensorsSettings(Section):
    """What to listen to."""

    subscriptions: tuple[Subscription, ...] = Field(
        (Subscription(topic="zigbee2mqtt/#"),),
        description="Topic filters to subscribe to, each with its payload adapter.",
    )
    max_payload_bytes: int = Field(
        65536, ge=64, description="Payloads larger than this are dead-lettered unread."
    )


class SummarySettings(Section):
    """When and how the model narrates the facts."""

    window_s: float = Field(
        300.0, gt=0, description="Length of the rolling window summarised, in seconds."
    )
    interval_s: float = Field(
        300.0, gt=0, description="Seconds between periodic summaries."
    )
    max_new_tokens: int = Field(
        96, ge=1, le=4096, description="Upper bound on generated tokens per summary."
    )
    deadline_s: float = Field(
        60.0, gt=0, description="Wall-clock budget for one generation; it stops cleanly after."
    )
    max_backlog: int = Field(
        4, ge=1, le=1000, description="Pending generations kept; when full the oldest is dropped."
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


class Settings(BaseSettings):
    """All of edge-agent's settings."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="Broker connection.")
    sensors: SensorsSettings = Field(
        default_factory=SensorsSettings, description="Subscriptions and input limits."
    )
    summary: SummarySettings = Field(
        default_factory=SummarySettings, description="Windows and narration."
    )
    model: ModelSettings = Field(default_factory=ModelSettings, description="The language model.")
    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings, description="Home Assistant discovery."
    )
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; environment variables must win over it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check_password_sources(self) -> Settings:
        if self.mqtt.password is not None and self.mqtt.password_file is not None:
            raise ValueError("set mqtt.password or mqtt.password_file, not both")
        return self


def load_settings(path: Path | None) -> Settings:
    """Read ``path`` (TOML; optional) and the environment into validated settings.

    Raises :class:`ConfigError` whose message lists every problem with its key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist; pass --config PATH") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path)) from exc


def format_validation_error(exc: ValidationError, path: Path | None) -> str:
    """One line per problem: ``key: message (got value)``."""
    where = str(path) if path else "environment"
    lines = [f"invalid configuration ({where}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = err.get("input")
        shown = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key; check the spelling against `edge-agent config docs`")
        else:
            lines.append(f"  {key}: {err['msg']}{shown}")
    return "\n".join(lines)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced by ``'***'``."""
    data = settings.model_dump(mode="json")
    if settings.mqtt.password is not None:
        data["mqtt"]["password"] = "***"
    return data


def read_password(mqtt: MqttSettings) -> str | None:
    """The broker password from the file or the inline secret, whichever is set."""
    if mqtt.password_file is not None:
        try:
            return mqtt.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"mqtt.password_file {mqtt.password_file} cannot be read: {exc.strerror}"
            ) from exc
    return mqtt.password.get_secret_value() if mqtt.password else None
