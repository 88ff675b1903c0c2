"""Building the paho client from :class:`MqttOptions`, and its blocking connect.

Everything here is paho's connect-side API and its quirks (MQTT 5 session flags, TLS
host name checks, a socket leaked on a failed handshake), with failures translated
into :class:`TransportError` messages a person can act on.
"""

from __future__ import annotations

import logging
import socket
import ssl

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.domain import OFFLINE
from edge_agent.errors import TransportError
from edge_agent.transport.options import MqttOptions, tls_context
from edge_agent.transport.paho_io import BufferedClient


def make_client(opt: MqttOptions) -> BufferedClient:
    """A client with manual acks, a persistent session, TLS/auth and our last will."""
    v5 = opt.protocol == "5"
    client = BufferedClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=opt.client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        # 3.1.1 keeps the session through clean_session=False; on MQTT 5 paho wants
        # None here and clean_start (+ session expiry) on connect() instead.
        clean_session=None if v5 else False,
        reconnect_on_failure=False,
        manual_ack=True,
    )
    client.enable_logger(logging.getLogger("paho.mqtt"))
    client.connect_timeout = opt.connect_timeout_s
    if opt.tls is not None:
        client.tls_set_context(tls_context(opt.tls))
        # Also keeps paho from its own ssl.match_hostname (gone in Python 3.12): the
        # context checks the host name unless 'insecure' says not to.
        client.tls_insecure_set(opt.tls.insecure)
    if opt.username is not None:
        client.username_pw_set(opt.username, opt.password)
    # The broker publishes this for us if we vanish (crash, power loss, SIGKILL).
    client.will_set(opt.availability_topic, OFFLINE, qos=1, retain=True)
    return client


def open_connection(client: paho.Client, opt: MqttOptions, *, first: bool) -> None:
    """TCP/TLS connect and queue CONNECT (blocking: run it in a worker thread).

    The first call of a process sets the session up; later ones reuse paho's settings.
    """
    where = f"{opt.host}:{opt.port}"
    try:
        if first:
            _connect_first(client, opt)
        else:
            client.reconnect()
    except ssl.SSLError as exc:
        _close_leaked_sockets(exc)
        raise TransportError(
            f"TLS handshake with the MQTT broker at {where} failed: "
            f"{getattr(exc, 'verify_message', None) or exc.reason or exc}; "
            "check mqtt.tls.ca_file and that mqtt.host matches the broker certificate"
        ) from exc
    except OSError as exc:
        raise TransportError(
            f"cannot reach the MQTT broker at {where}: {exc.strerror or exc}; "
            "check mqtt.host and mqtt.port and that the broker runs"
        ) from exc


def _connect_first(client: paho.Client, opt: MqttOptions) -> None:
    if opt.protocol == "5":
        # paho quirk: MQTT 5's default clean_start is FIRST_ONLY, which wipes our
        # session on every process start. clean_start=False plus a session expiry
        # lets the broker queue QoS 1/2 messages while we are down; paho keeps both
        # (and these CONNECT properties) for its reconnect().
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = opt.session_expiry_s
        # The broker never has more unacknowledged QoS 1/2 messages out to us than
        # our inbound queue holds: flow control instead of loss.
        props.ReceiveMaximum = max(1, min(opt.inbound_queue_max, 65535))
        client.connect(opt.host, opt.port, opt.keepalive_s, clean_start=False, properties=props)
    else:
        client.connect(opt.host, opt.port, opt.keepalive_s)


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
