"""Typed settings: a TOML file overridden by ``EDGE_AGENT_*`` environment variables.

Only the CLI builds a :class:`Settings`; every component receives its own section or
plain values, never the whole object.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge_agent.errors import ConfigError
from edge_agent.ingest import SourceOptions, compile_path

ENV_PREFIX = "EDGE_AGENT_"


class Section(BaseModel):
    """A config section: frozen, and unknown keys are an error (typos must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(Section):
    """TLS towards the broker (mqtts, usually port 8883)."""

    enabled: bool = Field(False, description="Connect with TLS (1.2 or newer).")
    ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the broker; unset: system CAs."
    )
    cert_file: Path | None = Field(
        None, description="Client certificate (PEM), if the broker wants mutual TLS."
    )
    key_file: Path | None = Field(None, description="Private key (PEM) of cert_file.")
    insecure: bool = Field(
        False,
        description="DANGEROUS: do not check that the broker certificate names mqtt.host; "
        "anyone with a certificate from the same CA can then pose as the broker. "
        "For lab setups only.",
    )

    @model_validator(mode="after")
    def _check_pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return self


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
        description="File holding the broker password, read at start-up. A relative path "
        "is looked up in $CREDENTIALS_DIRECTORY when set (systemd LoadCredential=).",
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
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT protocol version: '5' (properties, session expiry) or '3.1.1'."
    )
    tls: TlsSettings = Field(default_factory=TlsSettings, description="TLS to the broker.")
    session_expiry_s: int = Field(
        86_400,
        ge=0,
        le=4_294_967_295,
        description="MQTT 5: how long the broker keeps our session (subscriptions and QoS "
        "1/2 messages) while we are away; 3.1.1 sessions last until the broker drops them.",
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, description="First reconnect delay; it doubles per failed attempt."
    )
    reconnect_max_s: float = Field(
        60.0, gt=0, description="Cap of the reconnect delay (each delay gets 50-100% jitter)."
    )
    outbox_path: Path = Field(
        Path("/var/lib/edge-agent/outbox.sqlite"),
        description="SQLite file holding our publishes while the broker is unreachable; "
        "its directory must be writable (systemd: StateDirectory=edge-agent).",
    )
    outbox_max_messages: int = Field(
        10_000, ge=1, description="Outbox capacity; when full the oldest entry is dropped."
    )
    outbox_max_age_s: float = Field(
        86_400.0, gt=0, description="Outbox entries older than this are dropped unsent."
    )
    inbound_queue_max: int = Field(
        1000,
        ge=1,
        le=65_535,
        description="Received messages waiting for the service; when full we stop reading "
        "the socket (backpressure, no loss). Also our MQTT 5 Receive Maximum.",
    )

    @model_validator(mode="after")
    def _check_reconnect(self) -> MqttSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @property
    def effective_client_id(self) -> str:
        """The client id to use: the configured one or one derived from the node id."""
        return self.client_id or f"edge-agent-{self.node_id}"

    def topic(self, leaf: str) -> str:
        """Our own topic ``<base_topic>/<node_id>/<leaf>``."""
        return f"{self.base_topic}/{self.node_id}/{leaf}"


AdapterName = Literal["zigbee2mqtt", "statestream", "tasmota", "esphome", "plain", "generic"]
"""Payload adapters; the same names as ``edge_agent.ingest.ADAPTERS``."""


class Subscription(Section):
    """One subscribed topic filter and the payload adapter that parses it."""

    topic: str = Field(
        min_length=1, description="MQTT topic filter, wildcards allowed, e.g. 'zigbee2mqtt/#'."
    )
    adapter: AdapterName = Field(
        "zigbee2mqtt",
        description="Payload adapter: 'zigbee2mqtt' (JSON state, availability), 'statestream' "
        "(Home Assistant mqtt_statestream), 'tasmota' (tele/stat topics), 'esphome' (MQTT "
        "state topics), 'plain' (number or ON/OFF text), 'generic' (JSON read with 'fields').",
    )
    area: str | None = Field(None, description="Area for devices on this topic, if not known.")
    device_areas: dict[str, str] = Field(
        default_factory=dict,
        description="Area per device name as the adapter reports it; wins over 'area'.",
    )
    units: dict[str, str] = Field(
        default_factory=dict,
        description="Unit per metric, or per '<device>.<metric>', used when the payload has "
        "none (and instead of the adapter's built-in guess).",
    )
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Accepted [min, max] per metric, or per '<device>.<metric>'; a message "
        "with a reading outside is dead-lettered as 'out_of_range'.",
    )
    device: str | None = Field(
        None,
        min_length=1,
        description="plain/generic: device name; default is taken from the topic.",
    )
    metric: str | None = Field(
        None,
        min_length=1,
        description="plain: metric name; default is the topic's last level.",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="generic: metric name -> path into the JSON document, e.g. "
        "'sensors[0].temp' or '$.a.b' (quote keys with dots: a[\"x.y\"]). Required for "
        "'generic'.",
    )

    @model_validator(mode="after")
    def _check_adapter_options(self) -> Subscription:
        for key, (low, high) in self.ranges.items():
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"ranges.{key}: expected finite [min, max] with min <= max")
        if self.adapter == "generic":
            if not self.fields:
                raise ValueError("the generic adapter needs 'fields' (metric -> JSON path)")
            for metric, path in self.fields.items():
                try:
                    compile_path(path)
                except ConfigError as exc:
                    raise ValueError(f"fields.{metric}: {exc}") from exc
        elif self.fields:
            raise ValueError("'fields' is only used by the generic adapter")
        if self.device is not None and self.adapter not in ("plain", "generic"):
            raise ValueError("'device' is only used by the plain and generic adapters")
        if self.metric is not None and self.adapter != "plain":
            raise ValueError("'metric' is only used by the plain adapter")
        return self

    def source_options(self) -> SourceOptions:
        """The adapter options as plain values, for ``Route.build``."""
        return SourceOptions(
            units=self.units,
            ranges=self.ranges,
            device_areas=self.device_areas,
            device=self.device,
            metric=self.metric,
            fields=self.fields,
        )


class SensorsSettings(Section):
    """What to listen to."""

    subscriptions: tuple[Subscription, ...] = Field(
        (Subscription(topic="zigbee2mqtt/#"),),
        description="Topic filters to subscribe to, each with its payload adapter.",
    )
    max_payload_bytes: int = Field(
        65536, ge=64, description="Payloads larger than this are dead-lettered unread."
    )

    @model_validator(mode="after")
    def _check_unique_topics(self) -> SensorsSettings:
        # A message goes to the first matching subscription, so a repeated filter is dead.
        seen: set[str] = set()
        for sub in self.subscriptions:
            if sub.topic in seen:
                raise ValueError(f"topic {sub.topic!r} is subscribed twice")
            seen.add(sub.topic)
        return self


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


class FactsSettings(Section):
    """How windows are kept and when a sensor counts as stale (keywords of WindowStore)."""

    baseline_s: float = Field(
        3600.0,
        gt=0,
        description="Seconds of readings kept per series for anomaly baselines (z-score); "
        "the summary window is the most recent part of it.",
    )
    max_points_per_series: int = Field(
        10_000, ge=10, description="Readings kept per series at most, whatever their age."
    )
    stale_factor: float = Field(
        3.0,
        gt=1,
        description="A sensor is stale after this many times its usual interval "
        "(median of recent gaps) without a reading.",
    )
    stale_min_s: float = Field(
        60.0, ge=0, description="Never call a sensor stale before this many seconds of silence."
    )
    stale_min_gaps: int = Field(
        3, ge=1, le=15, description="Gaps seen before a sensor's usual interval is trusted."
    )
    forget_after_s: float = Field(
        86_400.0,
        gt=0,
        description="A series silent this long is dropped (and no longer reported stale).",
    )
    max_changes: int = Field(
        20, ge=1, le=1000, description="Transitions of a binary sensor kept and reported."
    )


class ThresholdBounds(Section):
    """Allowed range of one metric; a reading outside it is an anomaly."""

    min: float | None = Field(None, description="Lowest normal value; None for no floor.")
    max: float | None = Field(None, description="Highest normal value; None for no ceiling.")

    @model_validator(mode="after")
    def _check_order(self) -> ThresholdBounds:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min {self.min} must be below max {self.max}")
        return self


class AnomalySettings(Section):
    """Which readings are anomalies (keywords of AnomalyDetector)."""

    thresholds: dict[str, ThresholdBounds] = Field(
        default_factory=lambda: {"co2": ThresholdBounds(max=1200.0)},
        description="Per metric name, the normal range, e.g. [anomalies.thresholds.co2] "
        "max = 1200.",
    )
    jumps: dict[str, float] = Field(
        default_factory=dict,
        description="Per metric name, the smallest step between two readings that is a "
        "jump, e.g. temperature = 3.",
    )
    zscore_k: float = Field(
        4.0, gt=0, description="A reading |z| >= k standard deviations from the mean is unusual."
    )
    zscore_min_count: int = Field(
        30, ge=2, description="Readings in the baseline before z-scores are trusted."
    )
    zscore_min_rel_std: float = Field(
        0.01,
        ge=0,
        description="Floor on the standard deviation as a fraction of the mean, so "
        "quantised sensors (21.0, 21.1) are not unusual on every step.",
    )
    cooldown_s: float = Field(
        900.0, ge=0, description="An active anomaly is raised again only after this long."
    )
    clear_on_recovery: bool = Field(
        True,
        description="A reading back in range ends the anomaly, so the next excursion is "
        "raised at once; false lets only the cooldown decide (damps flapping).",
    )
    threshold_hysteresis: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="A threshold anomaly ends only once the reading is back inside the range "
        "by this fraction of the limit (co2 max 1200: below 1176), so hovering does not flap.",
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
    facts: FactsSettings = Field(
        default_factory=FactsSettings, description="Windows, baselines and stale sensors."
    )
    anomalies: AnomalySettings = Field(
        default_factory=AnomalySettings, description="Thresholds, z-scores, jumps, cooldown."
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
