"""The one place a paho client is built: protocol, TLS, login and logging, for every command.

``run`` (through :mod:`.paho_client`), ``ha remove``, ``config check --connect``, the demo
and the bench all get their client here, so TLS and credentials work the same everywhere.
Connect failures are translated into :class:`TransportError` messages a person can act on.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import TransportError
from edge_agent.transport.options import Protocol, TlsOptions, tls_context

C = TypeVar("C", bound=paho.Client)

# OpenSSL's reasons when the other end does not speak TLS at all (a plain listener).
_NOT_TLS = ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Where the broker is and how to log in: plain values from the mqtt settings."""

    host: str
    port: int
    client_id: str
    protocol: Protocol = "5"
    username: str | None = None
    password: str | None = None
    tls: TlsOptions | None = None
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"


def new_client(opt: ClientOptions, cls: type[C], *, logs: bool = True, **paho_kwargs: Any) -> C:
    """A ``cls`` (paho.Client or a subclass) set up for ``opt``; not connected yet.

    ``paho_kwargs`` go to the constructor (``manual_ack``, ``clean_session``...);
    ``logs=False`` leaves paho's own logging off (the bench's plain-paho peer).
    Raises :class:`TransportError` when the TLS files cannot be loaded.
    """
    client = cls(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=opt.client_id,
        protocol=paho.MQTTv5 if opt.protocol == "5" else paho.MQTTv311,
        **paho_kwargs,
    )
    if logs:
        client.enable_logger(logging.getLogger("paho.mqtt"))
    client.connect_timeout = opt.connect_timeout_s
    if opt.tls is not None:
        client.tls_set_context(tls_context(opt.tls))
        # Also keeps paho from its own ssl.match_hostname (gone in Python 3.12): the
        # context checks the host name unless 'insecure' says not to.
        client.tls_insecure_set(opt.tls.insecure)
    if opt.username is not None:
        client.username_pw_set(opt.username, opt.password)
    return client


@contextlib.contextmanager
def connect_errors(where: str, *, tls: bool) -> Iterator[None]:
    """Translate what a blocking paho connect raises into one-line TransportErrors."""
    try:
        yield
    except (ConnectionResetError, ConnectionAbortedError) as exc:
        if not tls:
            raise _unreachable(where, exc) from exc
        # A plain listener reads our ClientHello as a broken MQTT packet and hangs up.
        _close_leaked_sockets(exc)
        raise TransportError(
            f"the MQTT broker at {where} hung up during the TLS handshake "
            f"({exc.strerror or exc}); is this port a plain MQTT listener (usually 1883)? "
            "then set mqtt.tls.enabled = false, or use its TLS port"
        ) from exc
    except ssl.SSLError as exc:
        _close_leaked_sockets(exc)
        detail = getattr(exc, "verify_message", None) or exc.reason or exc
        hint = "check mqtt.tls.ca_file and that mqtt.host matches the broker certificate"
        if exc.reason in _NOT_TLS:
            hint = "is this port a plain MQTT listener? then set mqtt.tls.enabled = false"
        raise TransportError(
            f"TLS handshake with the MQTT broker at {where} failed: {detail}; {hint}"
        ) from exc
    except OSError as exc:
        raise _unreachable(where, exc) from exc


def _unreachable(where: str, exc: OSError) -> TransportError:
    return TransportError(
        f"cannot reach the MQTT broker at {where}: {exc.strerror or exc}; "
        "check mqtt.host and mqtt.port and that the broker runs"
    )


def closed_before_connack(where: str, reason: object, *, tls: bool) -> str:
    """The message for a broker that hung up before it answered our CONNECT.

    A TLS listener reads a plain CONNECT as a broken TLS record and closes the socket:
    paho then reports only "Unspecified error", so say what most likely happened.
    """
    message = f"the broker at {where} closed the connection before answering CONNECT ({reason})"
    if not tls:
        message += (
            "; if this port is a TLS listener (usually 8883), set mqtt.tls.enabled = true"
            " (and mqtt.tls.ca_file)"
        )
    return message


def connect(client: paho.Client, opt: ClientOptions, **connect_kwargs: Any) -> None:
    """Blocking TCP/TLS connect and queue CONNECT; errors as TransportError."""
    with connect_errors(opt.where, tls=opt.tls is not None):
        client.connect(opt.host, opt.port, opt.keepalive_s, **connect_kwargs)


def connect_and_wait(client: paho.Client, opt: ClientOptions, **connect_kwargs: Any) -> None:
    """Connect, start paho's network thread and wait for the broker's CONNACK.

    For short-lived helper clients (``ha remove``, ``config check --connect``); the
    caller owns the running client (``disconnect()`` then ``loop_stop()``). Raises
    :class:`TransportError` on refusal, a hang-up before CONNACK or a timeout, with the
    network thread stopped.
    """
    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(_c: paho.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            outcome.append(f"the broker at {opt.where} refused the connection: {rc}")
        answered.set()

    def on_disconnect(_c: paho.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
        if not answered.is_set():
            outcome.append(closed_before_connack(opt.where, rc, tls=opt.tls is not None))
            answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    connect(client, opt, **connect_kwargs)
    client.loop_start()
    if not answered.wait(opt.connect_timeout_s):
        outcome.append(
            f"the broker at {opt.where} did not answer CONNECT within {opt.connect_timeout_s:g}s"
        )
    if outcome:
        close(client)
        raise TransportError(outcome[0])


def close(client: paho.Client) -> None:
    """Stop paho's network thread, then disconnect cleanly (no last will is sent).

    In this order: disconnecting first makes paho's thread run once more on the closed
    socket and log "Client is not connected" as an error on every clean exit.
    """
    client.loop_stop()
    with contextlib.suppress(Exception):  # best effort: the socket may be gone already
        client.disconnect()


def _close_leaked_sockets(exc: BaseException) -> None:
    """Close the socket paho leaves open when the TLS handshake in connect() fails.

    paho wraps and handshakes inside a helper and never closes the socket on error;
    it is only reachable from the traceback's frames.
    """
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, socket.socket):
                value.close()
        tb = tb.tb_next
