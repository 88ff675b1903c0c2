"""Plain connection values for the paho adapter, its TLS context and reconnect backoff."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.errors import TransportError

Protocol = Literal["5", "3.1.1"]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS towards the broker; ``ca_file=None`` trusts the system CA store."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    """Skip the host name check (the chain is still verified). Dangerous: anyone
    holding any certificate from the CA can impersonate the broker."""


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Plain connection values, taken from the mqtt settings section by the app."""

    host: str
    port: int
    client_id: str
    keepalive_s: int
    availability_topic: str
    subscriptions: tuple[str, ...]
    qos: int = 1
    username: str | None = None
    password: str | None = None
    connect_timeout_s: float = 10.0
    protocol: Protocol = "5"
    tls: TlsOptions | None = None
    session_expiry_s: int = 86_400
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 5.0
    outbox_path: Path | str = ":memory:"
    """SQLite file of the outbox; ':memory:' keeps it only for this process."""
    outbox_max_messages: int = 10_000
    outbox_max_age_s: float = 86_400.0
    inbound_queue_max: int = 1_000


FIRST_RECONNECT_MAX_S = 0.5
"""The first reconnect attempt after a lost connection comes within this many seconds."""


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds before reconnect ``attempt`` (0-based) after a lost connection.

    Attempt 0 comes at once, within ``FIRST_RECONNECT_MAX_S`` (uniform from 0): a broker
    restart takes well under a second, and sensors reconnect that fast too, so waiting
    longer only widens the gap. Attempt n >= 1 waits min(cap, base·2^(n-1)) × jitter, the
    jitter uniform in [0.5, 1.0], so a fleet that lost the same broker does not come back
    in lock-step; the cap is never exceeded.
    """
    if attempt <= 0:
        return rng.uniform(0.0, min(FIRST_RECONNECT_MAX_S, base_s, cap_s))
    return min(cap_s, base_s * 2.0 ** min(attempt - 1, 32)) * rng.uniform(0.5, 1.0)


def _tls_problem(setting: str, path: Path | None, exc: Exception) -> TransportError:
    if isinstance(exc, FileNotFoundError):
        why = "does not exist"
    elif isinstance(exc, PermissionError):
        why = "cannot be read (permission denied)"
    elif isinstance(exc, ssl.SSLError):
        why = f"is not a valid PEM file ({exc.reason or exc})"
    else:
        why = f"cannot be loaded ({getattr(exc, 'strerror', None) or exc})"
    return TransportError(f"mqtt.tls.{setting} {path} {why}")


def tls_context(tls: TlsOptions) -> ssl.SSLContext:
    """A client context: chain verified, TLS 1.2 or newer (host name: see ``insecure``).

    Raises :class:`TransportError` with one line naming the setting and file at fault.
    """
    try:
        # With a ca_file only that CA is trusted, not the system store as well.
        ctx = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise _tls_problem("ca_file", tls.ca_file, exc) from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        for setting, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
            if path is not None:
                try:
                    path.read_bytes()
                except OSError as exc:
                    raise _tls_problem(setting, path, exc) from exc
        try:
            ctx.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                f"mqtt.tls.cert_file {tls.cert_file} and key_file {tls.key_file} do not load "
                f"as a PEM certificate and its private key ({getattr(exc, 'reason', None) or exc})"
            ) from exc
    return ctx
