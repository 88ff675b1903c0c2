"""A dependency-free sd_notify client: readiness, watchdog and stopping messages for systemd."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def _address(env: Mapping[str, str]) -> str | bytes | None:
    path = env.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte instead of '@'.
        return b"\0" + path[1:].encode()
    if path.startswith("/"):
        return path
    return None  # unset, or a vsock address we have no use for on a device


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to the service manager.

    Returns ``False`` without error when not run by systemd (no ``NOTIFY_SOCKET``) or the
    socket cannot be reached: notifications are advisory, the service works without them.
    """
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1``, or ``None`` if it does not.

    Like ``sd_watchdog_enabled(3)``: ``WATCHDOG_USEC`` sets the period, and a
    ``WATCHDOG_PID`` naming another process means the watchdog is not ours. Callers should
    ping at about half of the returned interval.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    return usec / 1_000_000
