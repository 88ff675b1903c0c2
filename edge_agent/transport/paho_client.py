"""Building the paho client from :class:`MqttOptions`, and its blocking connect.

The client itself comes from the one factory (:mod:`.client_factory`: protocol, TLS,
login); here are the session's additions and paho's connect-side quirks (MQTT 5
session flags), with failures translated into :class:`TransportError` messages.
"""

from __future__ import annotations

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.domain import OFFLINE
from edge_agent.transport.client_factory import ClientOptions, connect_errors, new_client
from edge_agent.transport.options import MqttOptions
from edge_agent.transport.paho_io import BufferedClient


def client_options(opt: MqttOptions) -> ClientOptions:
    """The login part of ``opt``, for the one client factory."""
    return ClientOptions(
        host=opt.host,
        port=opt.port,
        client_id=opt.client_id,
        protocol=opt.protocol,
        username=opt.username,
        password=opt.password,
        tls=opt.tls,
        keepalive_s=opt.keepalive_s,
        connect_timeout_s=opt.connect_timeout_s,
    )


def make_client(opt: MqttOptions) -> BufferedClient:
    """A client with manual acks, a persistent session, TLS/auth and our last will."""
    client = new_client(
        client_options(opt),
        BufferedClient,
        # 3.1.1 keeps the session through clean_session=False; on MQTT 5 paho wants
        # None here and clean_start (+ session expiry) on connect() instead.
        clean_session=None if opt.protocol == "5" else False,
        reconnect_on_failure=False,
        manual_ack=True,
    )
    # The broker publishes this for us if we vanish (crash, power loss, SIGKILL).
    client.will_set(opt.availability_topic, OFFLINE, qos=1, retain=True)
    return client


def open_connection(client: paho.Client, opt: MqttOptions, *, first: bool) -> None:
    """TCP/TLS connect and queue CONNECT (blocking: run it in a worker thread).

    The first call of a process sets the session up; later ones reuse paho's settings.
    """
    with connect_errors(f"{opt.host}:{opt.port}", tls=opt.tls is not None):
        if first:
            _connect_first(client, opt)
        else:
            client.reconnect()


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
