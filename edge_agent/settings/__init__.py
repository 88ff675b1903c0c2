"""Typed settings: a TOML file overridden by ``EDGE_AGENT_*`` environment variables.

Only the CLI builds a :class:`Settings`; every component receives its own section or
plain values, never the whole object.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge_agent.errors import ConfigError
from edge_agent.settings.actions import (
    ActionParam,
    ActionSpec,
    ActionsSettings,
    Condition,
    EnumParam,
    FloatParam,
    IntParam,
    QuietHours,
)
from edge_agent.settings.alerts import AlertsSettings
from edge_agent.settings.base import ENV_PREFIX, Section
from edge_agent.settings.metrics import MetricsSettings
from edge_agent.settings.mqtt import (
    MqttSettings,
    TlsSettings,
)
from edge_agent.settings.runtime import (
    HomeAssistantSettings,
    LogSettings,
    ModelSettings,
    SummarySettings,
)
from edge_agent.settings.sensors import (
    AdapterName,
    AnomalySettings,
    FactsSettings,
    SensorsSettings,
    Subscription,
    ThresholdBounds,
)

__all__ = [
    "ENV_PREFIX",
    "ActionParam",
    "ActionSpec",
    "ActionsSettings",
    "AdapterName",
    "AlertsSettings",
    "AnomalySettings",
    "Condition",
    "EnumParam",
    "FactsSettings",
    "FloatParam",
    "HomeAssistantSettings",
    "IntParam",
    "LogSettings",
    "MetricsSettings",
    "ModelSettings",
    "MqttSettings",
    "QuietHours",
    "Section",
    "SensorsSettings",
    "Settings",
    "Subscription",
    "SummarySettings",
    "ThresholdBounds",
    "TlsSettings",
    "format_validation_error",
    "load_settings",
    "masked_dump",
    "read_api_key",
    "read_password",
]


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
    facts: FactsSettings = Field(
        default_factory=FactsSettings, description="Windows, baselines and stale sensors."
    )
    anomalies: AnomalySettings = Field(
        default_factory=AnomalySettings, description="Thresholds, z-scores, jumps, cooldown."
    )
    actions: ActionsSettings = Field(
        default_factory=ActionsSettings, description="Allowlisted actions and their policy."
    )
    alerts: AlertsSettings = Field(
        default_factory=AlertsSettings,
        description="Rate limits of anomaly notifications; saved excursion state.",
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="The Prometheus endpoint (off by default)."
    )

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
            lines.append(
                f"  {key}: unknown key; check the spelling against `edge-agent config docs`"
            )
        else:
            lines.append(f"  {key}: {err['msg']}{shown}")
    return "\n".join(lines)


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced by ``'***'``."""
    data = settings.model_dump(mode="json")
    if settings.mqtt.password is not None:
        data["mqtt"]["password"] = "***"
    return data


def read_api_key(model: ModelSettings) -> str | None:
    """The model server's API key from ``model.api_key_file``, or None without one."""
    if model.api_key_file is None:
        return None
    path = model.api_key_file
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and credentials:
        path = Path(credentials) / path
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise ConfigError(f"model.api_key_file {path} cannot be read: {exc.strerror}") from exc


def read_password(mqtt: MqttSettings) -> str | None:
    """The broker password from the file or the inline secret, whichever is set."""
    if mqtt.password_file is not None:
        path = mqtt.password_file
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if not path.is_absolute() and credentials:
            path = Path(credentials) / path
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file {path} cannot be read: {exc.strerror}") from exc
    return mqtt.password.get_secret_value() if mqtt.password else None
