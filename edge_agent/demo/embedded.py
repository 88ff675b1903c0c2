"""An MQTT broker inside this process (amqtt on its own thread), for when Mosquitto is absent.

amqtt is pure Python and asyncio-native, but it speaks MQTT 3.1.1 only: the demo
connects the agent with ``protocol = "3.1.1"`` to it. The broker runs on a private event
loop in a daemon thread, so a busy demo loop (or a stalled one) cannot stall the broker,
and :meth:`EmbeddedBroker.stop` joins that thread so nothing is left running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from importlib import metadata
from typing import Any

from edge_agent.demo.broker import free_port
from edge_agent.errors import StartupError


class EmbeddedBroker:
    """amqtt listening on a free loopback port; the same shape as ``LocalMosquitto``."""

    protocol = "3.1.1"
    """The only MQTT version amqtt speaks."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @staticmethod
    def available() -> bool:
        """Whether amqtt is installed (the ``demo`` extra)."""
        try:
            metadata.version("amqtt")
        except metadata.PackageNotFoundError:
            return False
        return True

    @staticmethod
    def describe() -> str:
        """``amqtt <version>``, for the broker line of the demo."""
        return f"amqtt {metadata.version('amqtt')}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker thread and wait until it listens."""
        if not self.available():
            raise StartupError(
                "no MQTT broker: install Mosquitto (apt-get install -y mosquitto) or the "
                "embedded one (pip install 'edge-agent[demo]')"
            )
        # amqtt logs every connection at INFO and client resets as warnings; the demo's
        # screen is for the agent, so only the broker's errors get through.
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        self._thread = threading.Thread(target=self._serve, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise StartupError(f"the embedded broker did not start within {timeout_s:.0f} s")
        if self._error is not None:
            self._thread.join(timeout_s)
            raise StartupError(
                f"the embedded broker could not listen on {self.host}:{self.port}: {self._error}"
            ) from self._error

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the broker down and join its thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout_s)
        self._thread = None

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        # Imported here: amqtt is an optional extra, and this module is imported by the
        # demo runner whether or not the embedded broker is used.
        from amqtt.broker import Broker

        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous login: no $SYS publisher, no packet logger.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        try:
            broker = Broker(config)
            await broker.start()
        except Exception as exc:  # amqtt raises BrokerError, OSError, ValueError...
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stopped.wait()
        finally:
            await broker.shutdown()
