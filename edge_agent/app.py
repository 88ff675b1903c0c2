"""The composition root: the one place that turns settings into wired components."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog

from edge_agent.errors import StartupError, TransportError
from edge_agent.llm.base import Generator
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.service import Agent, AgentConfig, Route
from edge_agent.settings import ModelSettings, Settings, read_password
from edge_agent.transport.mqtt import MqttOptions, MqttTransport
from edge_agent.worker import InferenceWorker

log = structlog.get_logger(__name__)


def load_generator(model: ModelSettings) -> Generator:
    """Load, verify and warm up the model folder named in settings."""
    return OnnxGenerator.load(
        Path(model.path), threads=model.threads, provider=model.provider, verify=model.verify
    )


def build_transport(settings: Settings) -> MqttTransport:
    """The broker connection, with our availability topic and subscriptions."""
    mqtt = settings.mqtt
    return MqttTransport(
        MqttOptions(
            host=mqtt.host,
            port=mqtt.port,
            client_id=mqtt.effective_client_id,
            keepalive_s=mqtt.keepalive_s,
            availability_topic=mqtt.topic("availability"),
            subscriptions=tuple(s.topic for s in settings.sensors.subscriptions),
            qos=mqtt.qos,
            username=mqtt.username,
            password=read_password(mqtt),
        )
    )


def build_agent(settings: Settings, transport: MqttTransport, worker: InferenceWorker) -> Agent:
    """The agent with its routes and plain config values."""
    summary = settings.summary
    routes = tuple(
        Route.build(s.topic, s.adapter, s.area) for s in settings.sensors.subscriptions
    )
    config = AgentConfig(
        summary_topic=settings.mqtt.topic("summary"),
        deadletter_topic=settings.mqtt.topic("deadletter"),
        window_s=summary.window_s,
        interval_s=summary.interval_s,
        max_new_tokens=summary.max_new_tokens,
        deadline_s=summary.deadline_s,
        max_payload_bytes=settings.sensors.max_payload_bytes,
    )
    return Agent(transport, worker, routes, config)


async def run(settings: Settings) -> None:
    """Load the model, connect, and serve until SIGTERM or SIGINT."""
    # The model loads before we connect, so 'online' means ready to answer.
    generator = await asyncio.to_thread(load_generator, settings.model)
    log.info("model_loaded", model=generator.model_id)
    transport = build_transport(settings)
    try:
        await transport.connect()
    except TransportError as exc:
        raise StartupError(str(exc)) from exc
    worker = InferenceWorker(generator, settings.summary.max_backlog)
    agent = build_agent(settings, transport, worker)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    worker_task = asyncio.create_task(worker.run(), name="inference-worker")
    agent_task = asyncio.create_task(agent.run(), name="agent")
    log.info("agent_started", node_id=settings.mqtt.node_id)
    await stop.wait()
    log.info("agent_stopping")
    await transport.close()
    await asyncio.wait_for(agent_task, timeout=5)
    worker_task.cancel()
    log.info("agent_stopped", events=agent.events_total, deadletters=agent.deadletters_total)
