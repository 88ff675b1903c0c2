"""Clear retained topics with a short-lived paho client (``edge-agent ha remove``).

An empty retained publish deletes a retained message; for a discovery topic it also
tells Home Assistant to delete the entity (or, on the device topic, the whole device).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import TransportError


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """Where the broker is and how to log in: plain values from the mqtt settings."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ClearResult:
    """What :func:`clear_retained` did."""

    cleared: tuple[str, ...]
    """Every topic an empty retained message was published on, sorted."""
    found: dict[str, bytes]
    """Retained messages seen during the sweep, by topic."""


def clear_retained(
    login: BrokerLogin,
    topics: Iterable[str],
    sweep: Iterable[str] = (),
    sweep_s: float = 1.0,
) -> ClearResult:
    """Publish empty retained messages on ``topics`` and on every retained topic found.

    ``sweep`` are topic filters subscribed for ``sweep_s`` seconds first: retained
    messages they deliver (e.g. the summary of an area no longer configured) are cleared
    too. Raises :class:`TransportError` when the broker cannot be reached or refuses us.
    """
    found: dict[str, bytes] = {}
    lock = threading.Lock()  # on_message runs on paho's thread
    connected, subscribed = threading.Event(), threading.Event()
    refused: list[str] = []
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=login.client_id,
        protocol=paho.MQTTv311,
    )
    if login.username is not None:
        client.username_pw_set(login.username, login.password)

    def on_connect(_c: paho.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            refused.append(str(rc))
        connected.set()

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            with lock:
                found[msg.topic] = bytes(msg.payload)

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    try:
        client.connect(login.host, login.port, keepalive=30)
    except OSError as exc:
        raise TransportError(
            f"cannot reach the MQTT broker at {login.host}:{login.port}: {exc.strerror or exc}"
        ) from exc
    client.loop_start()
    try:
        if not connected.wait(login.timeout_s):
            raise TransportError(f"the broker at {login.host}:{login.port} did not answer")
        if refused:
            raise TransportError(f"the broker refused the connection: {refused[0]}")
        filters = list(sweep)
        if filters:
            client.subscribe([(f, 1) for f in filters])
            if not subscribed.wait(login.timeout_s):
                raise TransportError("the broker did not acknowledge the subscription")
            time.sleep(sweep_s)  # retained messages follow the SUBACK
            client.unsubscribe(filters)
        with lock:
            swept = dict(found)
        cleared = sorted({*topics, *swept})
        infos = [client.publish(t, b"", qos=1, retain=True) for t in cleared]
        deadline = time.monotonic() + login.timeout_s
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise TransportError("the broker did not acknowledge every publish in time")
        return ClearResult(tuple(cleared), swept)
    finally:
        client.disconnect()
        client.loop_stop()
