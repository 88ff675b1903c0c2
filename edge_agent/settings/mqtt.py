"""Broker connection settings: address, login, TLS, session, outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from edge_agent.settings.base import Section


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
        0.5,
        gt=0,
        description="Reconnect delay after the first failed attempt (the first attempt comes "
        "within 0.5 s of a lost connection); it doubles per failed attempt.",
    )
    reconnect_max_s: float = Field(
        5.0,
        gt=0,
        description="Cap of the reconnect delay (each delay gets 50-100% jitter): also the "
        "longest the agent may stay away after the broker is back.",
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
