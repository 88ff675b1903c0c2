"""Checks of what the configuration points at: model folder, TLS files, password, outbox, broker.

``edge-agent config check`` runs them all and prints one line per problem; ``run`` runs
the cheap file checks before it loads the model, so a wrong path fails in a second with
one line instead of after the model load with a traceback. Each check returns problems
as lines that name the setting, never raises.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import paho.mqtt.client as paho

from edge_agent.connection import client_options, tls_options
from edge_agent.errors import ConfigError, ModelError, TransportError
from edge_agent.llm.manifest import MANIFEST_NAME, REBUILD_HINT, Manifest, verify
from edge_agent.settings import ModelSettings, MqttSettings, read_password
from edge_agent.transport.client_factory import close, connect_and_wait, new_client
from edge_agent.transport.options import tls_context


def startup_problems(mqtt: MqttSettings) -> list[str]:
    """The cheap checks ``run`` makes before loading the model: TLS, password, outbox."""
    return [*tls_problems(mqtt), *password_problems(mqtt), *outbox_problems(mqtt.outbox_path)]


def tls_problems(mqtt: MqttSettings) -> list[str]:
    """The CA, certificate and key files load as PEM (only when TLS is on)."""
    tls = tls_options(mqtt)
    if tls is None:
        return []
    try:
        tls_context(tls)
    except TransportError as exc:
        return [str(exc)]
    return []


def password_problems(mqtt: MqttSettings) -> list[str]:
    """The password file can be read (a relative one only under systemd's credentials)."""
    path = mqtt.password_file
    if path is None:
        return []
    if not path.is_absolute() and not os.environ.get("CREDENTIALS_DIRECTORY"):
        # systemd's LoadCredential= puts it in $CREDENTIALS_DIRECTORY at run time only.
        return []
    try:
        read_password(mqtt)
    except ConfigError as exc:
        return [str(exc)]
    return []


def outbox_problems(outbox_path: Path) -> list[str]:
    """The outbox file (or the folder it will be created in) is writable by this user."""
    if str(outbox_path) == ":memory:":
        return []
    where = f"mqtt.outbox_path {outbox_path}"
    if outbox_path.is_dir():
        return [f"{where} is a folder; name a file in it (e.g. {outbox_path / 'outbox.sqlite'})"]
    if outbox_path.exists() and not os.access(outbox_path, os.R_OK | os.W_OK):
        return [f"{where} is not writable by this user (uid {os.getuid()})"]
    # The outbox creates missing folders: the nearest existing one must take a new file.
    folder = outbox_path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return [f"{where}: {folder} is not a folder"]
    try:
        # os.access says yes to root even on a read-only mount: really create a file.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".edge-agent-check-"):
            pass
    except OSError as exc:
        return [
            f"{where}: cannot create files in {folder} ({exc.strerror or exc}); make it "
            "writable for the service user (systemd: StateDirectory=edge-agent)"
        ]
    return []


def model_problems(model: ModelSettings, *, deep: bool = False) -> list[str]:
    """The model folder has a valid manifest and every file it lists, at its size.

    The quick check is a ``stat`` per file: present, readable, non-empty and, where the
    manifest records sizes, exactly that size (a truncated ``model.onnx.data`` is caught
    without hashing). Folders exported before sizes were recorded get presence and a
    non-zero size only. ``deep`` also hashes every file against the manifest, as ``run``
    does before loading.
    """
    if model.backend != "onnx":
        return []  # the model lives on a server; start-up probes it instead
    folder = Path(model.path)
    where = f"model.path {folder}"
    try:
        manifest = Manifest.from_dir(folder)
    except ModelError as exc:
        return [f"{where}: {exc}"]
    problems = []
    for name in sorted(manifest.files):
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{where}: {name} is listed in {MANIFEST_NAME} but missing")
            continue
        wrong = manifest.size_problem(name, size)
        if not path.is_file():
            problems.append(f"{where}: {name} is not a regular file")
        elif size == 0:
            problems.append(f"{where}: {name} is empty")
        elif wrong is not None:
            problems.append(f"{where}: {wrong}; copy the folder again or {REBUILD_HINT}")
        elif not os.access(path, os.R_OK):
            problems.append(f"{where}: {name} is not readable by this user (uid {os.getuid()})")
    if problems or not deep:
        return problems
    try:
        verify(folder)
    except ModelError as exc:
        return [f"{where}: {exc}"]
    return []


def broker_problems(mqtt: MqttSettings, timeout_s: float = 5.0) -> list[str]:
    """Connect to the broker with the configured address, TLS and login, then leave.

    The check uses its own client id (the service's + ``-check``) and a clean session,
    so a running service keeps its connection and its queued messages.
    """
    try:
        opt = client_options(mqtt, client_id_suffix="check", connect_timeout_s=timeout_s)
        client = new_client(opt, paho.Client)
        connect_and_wait(client, opt)
    except (TransportError, ConfigError) as exc:
        return [str(exc)]
    close(client)
    return []
