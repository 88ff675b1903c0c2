"""TLS to a real Mosquitto: CA verification, host name check, client certificates."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.demo.broker import LocalMosquitto, free_port
from edge_agent.errors import TransportError
from edge_agent.transport.mqtt import MqttOptions, MqttTransport, TlsOptions


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(workdir: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        cwd=workdir,
    )  # fmt: skip


def make_cert(workdir: Path, name: str, ca: str, san: str) -> None:
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=workdir,
    )  # fmt: skip
    (workdir / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=workdir,
    )  # fmt: skip


@dataclass
class TlsBroker:
    """Mosquitto with a TLS listener that requires a client certificate."""

    dir: Path
    port: int


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[TlsBroker]:
    if shutil.which("openssl") is None or not LocalMosquitto.available():
        pytest.fail("openssl and mosquitto are needed: apt-get install -y openssl mosquitto")
    # mosquitto started as root drops to its own user, which must read these files.
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-tls-"))
    workdir.chmod(0o755)
    make_ca(workdir, "ca")
    make_ca(workdir, "other-ca")
    make_cert(workdir, "server", "ca", "DNS:localhost")
    make_cert(workdir, "client", "ca", "DNS:edge-agent")
    for path in workdir.iterdir():
        path.chmod(0o644)
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"cafile {workdir}/ca.pem\n"
        f"certfile {workdir}/server.pem\n"
        f"keyfile {workdir}/server.key\n"
        "require_certificate true\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "TLS mosquitto did not start"
            time.sleep(0.05)
    yield TlsBroker(workdir, port)
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


def connect(broker: TlsBroker, host: str, ca: str = "ca", insecure: bool = False) -> None:
    node = uuid.uuid4().hex[:8]
    tls = TlsOptions(
        ca_file=broker.dir / f"{ca}.pem",
        cert_file=broker.dir / "client.pem",
        key_file=broker.dir / "client.key",
        insecure=insecure,
    )
    opt = MqttOptions(
        host=host,
        port=broker.port,
        client_id=f"ea-{node}",
        keepalive_s=10,
        availability_topic=f"ea/{node}/availability",
        subscriptions=(f"in/{node}/#",),
        tls=tls,
        connect_timeout_s=5,
    )

    async def scenario() -> None:
        transport = MqttTransport(opt)
        await transport.connect()
        assert transport.connected
        await transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_tls_with_ca_and_client_certificate_connects(tls_broker: TlsBroker) -> None:
    connect(tls_broker, "localhost")


def test_a_wrong_ca_fails_with_a_clear_error(tls_broker: TlsBroker) -> None:
    with pytest.raises(TransportError, match=r"TLS handshake .* failed: .*mqtt\.tls\.ca_file"):
        connect(tls_broker, "localhost", ca="other-ca")


def test_the_host_name_is_checked_unless_insecure(tls_broker: TlsBroker) -> None:
    # The certificate names 'localhost', not '127.0.0.1'.
    with pytest.raises(TransportError, match="TLS handshake"):
        connect(tls_broker, "127.0.0.1")
    connect(tls_broker, "127.0.0.1", insecure=True)
