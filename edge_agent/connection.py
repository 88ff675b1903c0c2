"""The mqtt settings turned into broker connection options: one translation for every command.

``run`` (:func:`edge_agent.app.build_transport`), ``ha remove`` and ``config check
--connect`` all log in through here, so TLS and credentials mean the same everywhere.
"""

from __future__ import annotations

from edge_agent.settings import MqttSettings, read_password
from edge_agent.transport.client_factory import ClientOptions
from edge_agent.transport.options import TlsOptions


def tls_options(mqtt: MqttSettings) -> TlsOptions | None:
    """The TLS part of the mqtt section; None when TLS is off."""
    if not mqtt.tls.enabled:
        return None
    return TlsOptions(
        ca_file=mqtt.tls.ca_file,
        cert_file=mqtt.tls.cert_file,
        key_file=mqtt.tls.key_file,
        insecure=mqtt.tls.insecure,
    )


def client_options(
    mqtt: MqttSettings, *, client_id_suffix: str, connect_timeout_s: float = 10.0
) -> ClientOptions:
    """Options for a short-lived helper client beside the service.

    Its client id is the service's plus ``client_id_suffix``: reusing the service's own
    id would take over (and, with a clean start, wipe) the service's session.
    Raises ConfigError when the password file cannot be read.
    """
    return ClientOptions(
        host=mqtt.host,
        port=mqtt.port,
        client_id=f"{mqtt.effective_client_id}-{client_id_suffix}",
        protocol=mqtt.protocol,
        username=mqtt.username,
        password=read_password(mqtt),
        tls=tls_options(mqtt),
        keepalive_s=mqtt.keepalive_s,
        connect_timeout_s=connect_timeout_s,
    )
