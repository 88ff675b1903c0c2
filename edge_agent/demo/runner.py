"""Runs the demo: a broker, the agent in-process, the simulated day, and a viewer."""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import paho.mqtt.client as paho
import structlog

from edge_agent import app
from edge_agent.demo.broker import LocalMosquitto
from edge_agent.demo.embedded import EmbeddedBroker
from edge_agent.demo.simulate import AREAS, DEVICE_AREAS, FAN, simulate_day
from edge_agent.demo.state import LINE_KINDS, decode, hhmm
from edge_agent.errors import StartupError, TransportError
from edge_agent.settings import Settings
from edge_agent.transport.client_factory import (
    ClientOptions,
    close,
    connect,
    new_client,
)

log = structlog.get_logger(__name__)

NODE_ID = "demo"
_APPROVE_AFTER_S = 1.0
BASE = "edge-agent"
BrokerImpl = Literal["auto", "mosquitto", "embedded"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``edge-agent demo`` was asked to do."""

    model_dir: Path
    speed: float
    """Simulated seconds per real second."""
    duration_s: float | None
    window_s: float
    interval_s: float
    max_new_tokens: int
    threads: int
    broker: tuple[str, int] | None = None
    """An external broker; None starts one (see ``broker_impl``)."""
    broker_impl: BrokerImpl = "auto"
    """'auto': Mosquitto when installed, else the embedded amqtt broker."""


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """The broker the demo talks to, for the ``broker`` line and the agent's settings."""

    kind_of: Literal["mosquitto", "embedded", "external"]
    name: str
    host: str
    port: int
    protocol: Literal["5", "3.1.1"]


class Sink(Protocol):
    """Where the demo's output goes: JSON lines, or the live view's state."""

    def record(self, kind: str, fields: dict[str, Any]) -> None:
        """One record; ``kind`` is a JSON-line kind, or ``agent`` (the status topic)."""

    def sensor(self, sim_t: float, topic: str, payload: bytes) -> None:
        """One replayed sensor message."""

    def token(self, delta: str) -> None:
        """One streamed token delta."""


class JsonLines:
    """The ``--no-ui`` output: one JSON object per line on stdout, kinds from LINE_KINDS."""

    def record(self, kind: str, fields: dict[str, Any]) -> None:
        """Print the record if it is one of the stable line kinds."""
        if kind in LINE_KINDS:
            print(json.dumps({"kind": kind, **fields}, ensure_ascii=False), flush=True)

    def sensor(self, sim_t: float, topic: str, payload: bytes) -> None:
        """Not printed: ``replay`` progress lines stand for them."""

    def token(self, delta: str) -> None:
        """Not printed: the finished summary line carries the text."""


class SimClock:
    """Maps real time onto the simulated day, starting at midnight UTC of a fixed date."""

    def __init__(self, speed: float, day_start: float) -> None:
        self.speed = speed
        self.day_start = day_start
        self._real_start = time.monotonic()

    def restart(self) -> None:
        """Start the day again from midnight, now."""
        self._real_start = time.monotonic()

    def __call__(self) -> float:
        return self.day_start + self.elapsed()

    def elapsed(self) -> float:
        """Simulated seconds since the day started."""
        return (time.monotonic() - self._real_start) * self.speed


class DemoClient:
    """Subscribes to the agent's topics and publishes the replayed sensor messages."""

    def __init__(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._loop = loop
        self._subscribed: asyncio.Future[None] = loop.create_future()
        # 3.1.1: the one version every broker here speaks (amqtt has no MQTT 5).
        opt = ClientOptions(host, port, "edge-agent-demo-viewer", protocol="3.1.1", keepalive_s=60)
        try:
            self._client = new_client(opt, paho.Client)
            self._client.on_connect = self._on_connect
            self._client.on_subscribe = self._on_subscribe
            self._client.on_message = self._on_message
            connect(self._client, opt)
        except TransportError as exc:
            raise StartupError(str(exc)) from exc
        self._client.loop_start()

    async def subscribed(self, timeout_s: float = 10.0) -> None:
        """Wait until the broker confirmed our subscription (so no message is missed)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._subscribed), timeout_s)
        except TimeoutError as exc:
            raise StartupError("the broker did not confirm the demo's subscription") from exc

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        # Subscribing here (not before connect) also restores it after a reconnect.
        client.subscribe(f"{BASE}/{NODE_ID}/#", qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self._loop.call_soon_threadsafe(self._mark_subscribed)

    def _mark_subscribed(self) -> None:
        if not self._subscribed.done():
            self._subscribed.set_result(None)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            return  # left on the broker by an earlier run (an external broker keeps them)
        self._loop.call_soon_threadsafe(self.queue.put_nowait, (msg.topic, bytes(msg.payload)))

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish one replayed sensor message."""
        self._client.publish(topic, payload, qos=1)

    def close(self) -> None:
        """Disconnect and stop paho's network thread."""
        close(self._client)


@contextmanager
def open_broker(opts: DemoOptions, workdir: Path) -> Iterator[BrokerInfo]:
    """The external broker, or a local one started here and stopped on exit."""
    if opts.broker is not None:
        host, port = opts.broker
        yield BrokerInfo("external", "external", host, port, "5")
        return
    impl = opts.broker_impl
    if impl == "auto":
        impl = "mosquitto" if LocalMosquitto.available() else "embedded"
    broker: LocalMosquitto | EmbeddedBroker
    if impl == "mosquitto":
        broker = LocalMosquitto(workdir)
        info = BrokerInfo("mosquitto", LocalMosquitto.describe(), broker.host, broker.port, "5")
    else:
        broker = EmbeddedBroker()
        name = f"{EmbeddedBroker.describe()} (embedded)" if EmbeddedBroker.available() else ""
        info = BrokerInfo("embedded", name, broker.host, broker.port, "3.1.1")
    broker.start()
    try:
        yield info
    finally:
        broker.stop()


DEMO_FAN: dict[str, Any] = {
    "id": "ventilate",
    "description": "Switch the living room ventilation fan",
    "topic": "zigbee2mqtt/{device}/set",
    "payload": '{"state": "{state}"}',
    "devices": [FAN],
    "risk": "low",
    "mode": "confirm",
    "params": {"state": {"type": "enum", "values": ["ON", "OFF"]}},
    "when": {"metric": "co2", "above": 1200, "devices": ["living_room/climate"]},
    # Simulated seconds: at the default 720x the person has 20 real seconds to approve.
    "confirm_expiry_s": 14_400,
}
"""The demo's allowlist: one fan, approved by the demo itself (see ``_approve``)."""


def demo_settings(opts: DemoOptions, broker: BrokerInfo, workdir: Path) -> Settings:
    """The agent's settings for the demo: our broker, the model, a fast summary cadence."""
    return Settings(
        mqtt={
            "host": broker.host,
            "port": broker.port,
            "node_id": NODE_ID,
            "base_topic": BASE,
            "protocol": broker.protocol,
            "outbox_path": workdir / "outbox.sqlite",
        },
        sensors={
            "subscriptions": [
                {"topic": "zigbee2mqtt/#", "adapter": "zigbee2mqtt", "device_areas": DEVICE_AREAS}
            ]
        },
        model={"path": opts.model_dir, "threads": opts.threads, "verify": True},
        summary={
            "window_s": opts.window_s,
            "interval_s": opts.interval_s,
            "max_new_tokens": opts.max_new_tokens,
            # One pending summary per area: a slow model drops whole rounds, not areas.
            "max_backlog": len(AREAS) + 1,
            "status_interval_s": 2.0,
        },
        actions={"audit_path": workdir / "actions.sqlite", "allow": [DEMO_FAN]},
        log={"level": "warning"},
    )


async def run_demo(opts: DemoOptions, sink: Sink) -> int:
    """Run until the day ends, ``duration_s`` passes, or SIGINT/SIGTERM/SIGHUP; clean up.

    Returns 0, or 130 after Ctrl-C. A second Ctrl-C while shutting down interrupts at once.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupted: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        interrupted.append(sig)
        stop.set()
        loop.remove_signal_handler(sig)  # the next one falls through to the default

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as tmp,
            open_broker(opts, Path(tmp)) as broker,
        ):
            sink.record(
                "broker",
                {
                    "kind_of": broker.kind_of,
                    "name": broker.name,
                    "host": broker.host,
                    "port": broker.port,
                    "protocol": broker.protocol,
                    "workdir": tmp,
                },
            )
            await _run(opts, broker, Path(tmp), stop, sink)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 130 if signal.SIGINT in interrupted else 0


async def _run(
    opts: DemoOptions, broker: BrokerInfo, workdir: Path, stop: asyncio.Event, sink: Sink
) -> None:
    loop = asyncio.get_running_loop()
    settings = demo_settings(opts, broker, workdir)
    clock = SimClock(opts.speed, datetime(2026, 1, 15, tzinfo=UTC).timestamp())
    client = DemoClient(broker.host, broker.port, loop)
    tasks: list[asyncio.Task[Any]] = []
    agent: asyncio.Task[None] | None = None
    try:
        await client.subscribed()
        agent = asyncio.create_task(app.run(settings, stop=stop, clock=clock), name="agent")
        online = asyncio.Event()
        tasks.append(asyncio.create_task(_show(client, clock, online, sink), name="viewer"))
        if not await _wait_online(online, agent, stop, sink):
            return
        clock.restart()  # the simulated day starts once the agent is ready
        replay = asyncio.create_task(_replay(client, clock, stop, sink), name="replay")
        tasks.append(replay)
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait()), replay, agent]
        if opts.duration_s is not None:
            waiters.append(asyncio.create_task(asyncio.sleep(opts.duration_s)))
        tasks.extend(waiters[:1] + waiters[3:])
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if replay.done() and opts.duration_s is None and not stop.is_set():
            # The day is over: leave a moment for the last summaries, then stop.
            await asyncio.wait([agent], timeout=2 * opts.interval_s)
    finally:
        stop.set()
        try:
            if agent is not None:
                await asyncio.wait_for(agent, timeout=30)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            client.close()


async def _wait_online(
    online: asyncio.Event, agent: asyncio.Task[None], stop: asyncio.Event, sink: Sink
) -> bool:
    """True once the agent is online; False if it was stopped (Ctrl-C) before."""
    sink.record("status", {"message": "loading the model and connecting"})
    seen = asyncio.create_task(online.wait())
    await asyncio.wait([seen, agent], return_when=asyncio.FIRST_COMPLETED)
    if not seen.done():
        seen.cancel()
        agent.result()  # re-raises the start-up error
        if stop.is_set():
            return False
        raise StartupError("the agent stopped before it came online")
    sink.record("status", {"message": "agent online; replaying the simulated day"})
    return True


async def _replay(client: DemoClient, clock: SimClock, stop: asyncio.Event, sink: Sink) -> None:
    sent = 0
    for msg in simulate_day():
        wait = (msg.t - clock.elapsed()) / clock.speed
        if wait > 0:
            await asyncio.sleep(wait)
        if stop.is_set():
            return
        client.publish(msg.topic, msg.payload)
        sink.sensor(msg.t, msg.topic, msg.payload)
        sent += 1
        if sent % 200 == 0:
            sink.record("replay", {"sim_time": hhmm(msg.t), "messages": sent})
    sink.record("replay", {"sim_time": "24:00", "messages": sent, "done": True})


async def _show(client: DemoClient, clock: SimClock, online: asyncio.Event, sink: Sink) -> None:
    prefix = f"{BASE}/{NODE_ID}/"
    while True:
        topic, payload = await client.queue.get()
        leaf = topic.removeprefix(prefix)
        if leaf == "availability":
            if payload == b"online":
                online.set()
            continue
        if leaf == "summary/stream":
            sink.token(payload.decode("utf-8", errors="replace"))
            continue
        record = decode(leaf, payload, hhmm(clock.elapsed()))
        if record is not None:
            sink.record(*record)
        if leaf == "action/event":
            _approve(client, json.loads(payload), sink)


def _approve(client: DemoClient, event: dict[str, Any], sink: Sink) -> None:
    """Stand in for the person: approve a confirm proposal by its action_id, shortly after."""
    if event.get("event_type") != "proposed" or event.get("mode") != "confirm":
        return
    ident = str(event.get("action_id"))
    body = json.dumps({"action_id": ident, "by": "demo"}).encode()
    topic = f"{BASE}/{NODE_ID}/action/approve"
    message = f"demo approves {event.get('action')}({event.get('device')}) id {ident}"

    def press() -> None:
        sink.record("status", {"message": message})
        client.publish(topic, body)

    # A person reads the proposal first; the JSON approval names exactly this one.
    asyncio.get_running_loop().call_later(_APPROVE_AFTER_S, press)


def main_sync(opts: DemoOptions) -> int:
    """Blocking entry point for the ``--no-ui`` output (the live view is ``view.run_live``)."""
    return asyncio.run(run_demo(opts, JsonLines()))
