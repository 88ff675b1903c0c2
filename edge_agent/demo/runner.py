"""Runs the demo: local broker, the agent in-process, the simulated day, and a viewer."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import app
from edge_agent.demo.broker import LocalMosquitto
from edge_agent.demo.simulate import DAY_S, simulate_day
from edge_agent.settings import Settings

log = structlog.get_logger(__name__)

NODE_ID = "demo"
BASE = "edge-agent"


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


class Viewer:
    """Subscribes to everything and prints JSON lines; doubles as the replay publisher."""

    def __init__(self, host: str, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="edge-agent-demo-viewer"
        )
        self._loop = loop
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.subscribe(f"{BASE}/{NODE_ID}/#", qos=1)
        self._client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self.queue.put_nowait, (msg.topic, bytes(msg.payload)))

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish one replayed sensor message."""
        self._client.publish(topic, payload, qos=1)

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


def emit(kind: str, **fields: Any) -> None:
    """One JSON line on stdout (the --no-ui output)."""
    print(json.dumps({"kind": kind, **fields}, ensure_ascii=False), flush=True)


async def run_demo(opts: DemoOptions) -> int:
    """Run the demo until the day ends, ``duration_s`` passes, or Ctrl-C."""
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as workdir:
        broker = None
        if opts.broker is None:
            broker = LocalMosquitto(Path(workdir))
            broker.start()
            host, port = broker.host, broker.port
            emit("broker", kind_of="mosquitto", host=host, port=port)
        else:
            host, port = opts.broker
            emit("broker", kind_of="external", host=host, port=port)
        try:
            return await _run(opts, host, port, Path(workdir))
        finally:
            if broker is not None:
                broker.stop()


async def _run(opts: DemoOptions, host: str, port: int, workdir: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settings = Settings(
        mqtt={
            "host": host,
            "port": port,
            "node_id": NODE_ID,
            "base_topic": BASE,
            "outbox_path": workdir / "outbox.sqlite",
        },
        model={"path": opts.model_dir, "threads": opts.threads, "verify": True},
        summary={
            "window_s": opts.window_s,
            "interval_s": opts.interval_s,
            "max_new_tokens": opts.max_new_tokens,
            "max_backlog": 1,
        },
        log={"level": "warning"},
    )
    day_start = datetime(2026, 1, 15, tzinfo=UTC).timestamp()
    clock = SimClock(opts.speed, day_start)
    viewer = Viewer(host, port, loop)
    agent = asyncio.create_task(app.run(settings, stop=stop, clock=clock), name="agent")
    show = asyncio.create_task(_show(viewer, clock), name="viewer")
    try:
        await _wait_online(viewer, agent)
        clock.restart()  # the simulated day starts once the agent is ready
        replay = asyncio.create_task(_replay(viewer, clock, stop), name="replay")
        deadline = None if opts.duration_s is None else loop.time() + opts.duration_s
        waiters = [asyncio.create_task(stop.wait()), replay]
        if deadline is not None:
            waiters.append(asyncio.create_task(asyncio.sleep(opts.duration_s or 0)))
        await asyncio.wait([*waiters, agent], return_when=asyncio.FIRST_COMPLETED)
        for task in waiters:
            task.cancel()
    finally:
        stop.set()
        try:
            await asyncio.wait_for(agent, timeout=30)
        finally:
            show.cancel()
            viewer.close()
    return 0


async def _wait_online(viewer: Viewer, agent: asyncio.Task[None]) -> None:
    emit("status", message="loading the model and connecting")
    while True:
        get = asyncio.create_task(viewer.queue.get())
        done, _ = await asyncio.wait([get, agent], return_when=asyncio.FIRST_COMPLETED)
        if agent in done:
            get.cancel()
            agent.result()  # re-raises the start-up error
            raise RuntimeError("the agent stopped before it came online")
        topic, payload = get.result()
        if topic.endswith("/availability") and payload == b"online":
            emit("status", message="agent online; replaying the simulated day")
            return


async def _replay(viewer: Viewer, clock: SimClock, stop: asyncio.Event) -> None:
    sent = 0
    for msg in simulate_day():
        wait = (msg.t - clock.elapsed()) / clock.speed
        if wait > 0:
            await asyncio.sleep(wait)
        if stop.is_set():
            return
        viewer.publish(msg.topic, msg.payload)
        sent += 1
        if sent % 200 == 0:
            emit("replay", sim_time=_hhmm(msg.t), messages=sent)
    emit("replay", sim_time="24:00", messages=sent, done=True)


async def _show(viewer: Viewer, clock: SimClock) -> None:
    while True:
        topic, payload = await viewer.queue.get()
        leaf = topic.removeprefix(f"{BASE}/{NODE_ID}/")
        if leaf == "summary":
            doc = json.loads(payload)
            emit(
                "summary",
                sim_time=_hhmm(clock.elapsed()),
                title=doc["title"],
                text=doc["text"],
                latency_s=doc["latency_s"],
                tokens=doc["tokens"],
            )
        elif leaf == "deadletter":
            emit("deadletter", **json.loads(payload))


def _hhmm(t: float) -> str:
    t = min(t, DAY_S)
    return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}"


def main_sync(opts: DemoOptions) -> int:
    """Blocking entry point for the CLI."""
    try:
        return asyncio.run(run_demo(opts))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
