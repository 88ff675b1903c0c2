"""The composition root: the one place that turns settings into wired components."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge_agent import sdnotify
from edge_agent.actions.constrain import JsonConstraint
from edge_agent.actions.engine import ActionsEngine
from edge_agent.actions.wiring import action_constraint, build_engine
from edge_agent.anomalies import AnomalyDetector
from edge_agent.errors import StartupError, TransportError
from edge_agent.facts import WindowStore
from edge_agent.ha.discovery import discovery_messages
from edge_agent.ha.publisher import DiscoveryPublisher
from edge_agent.ha.wiring import build_node
from edge_agent.llm.base import Generator
from edge_agent.llm.draft import DraftConfig
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.narrator import Narrator, NarratorConfig
from edge_agent.service import Agent, AgentConfig, Route, Topics
from edge_agent.settings import ModelSettings, Settings, read_password
from edge_agent.status import StatusReporter
from edge_agent.transport.base import Message
from edge_agent.transport.mqtt import MqttOptions, MqttTransport, TlsOptions
from edge_agent.worker import InferenceWorker

log = structlog.get_logger(__name__)


def load_generator(model: ModelSettings) -> Generator:
    """Load, verify and warm up the model folder named in settings."""
    return OnnxGenerator.load(
        Path(model.path),
        threads=model.threads,
        provider=model.provider,
        verify=model.verify,
        context_tokens=model.context_tokens,
        draft=DraftConfig(
            enabled=model.draft,
            max_tokens=model.draft_max_tokens,
            ngram_min=model.draft_ngram_min,
            ngram_max=max(model.draft_ngram_min, model.draft_ngram_max),
        ),
    )


def build_transport(settings: Settings, extra_subscriptions: tuple[str, ...] = ()) -> MqttTransport:
    """The broker connection, with our availability topic and subscriptions."""
    mqtt = settings.mqtt
    return MqttTransport(
        MqttOptions(
            host=mqtt.host,
            port=mqtt.port,
            client_id=mqtt.effective_client_id,
            keepalive_s=mqtt.keepalive_s,
            availability_topic=mqtt.topic("availability"),
            subscriptions=(
                *(s.topic for s in settings.sensors.subscriptions),
                *extra_subscriptions,
            ),
            qos=mqtt.qos,
            username=mqtt.username,
            password=read_password(mqtt),
            protocol=mqtt.protocol,
            tls=TlsOptions(
                ca_file=mqtt.tls.ca_file,
                cert_file=mqtt.tls.cert_file,
                key_file=mqtt.tls.key_file,
                insecure=mqtt.tls.insecure,
            )
            if mqtt.tls.enabled
            else None,
            session_expiry_s=mqtt.session_expiry_s,
            reconnect_min_s=mqtt.reconnect_min_s,
            reconnect_max_s=mqtt.reconnect_max_s,
            outbox_path=mqtt.outbox_path,
            outbox_max_messages=mqtt.outbox_max_messages,
            outbox_max_age_s=mqtt.outbox_max_age_s,
            inbound_queue_max=mqtt.inbound_queue_max,
        )
    )


def build_agent(
    settings: Settings,
    transport: MqttTransport,
    worker: InferenceWorker,
    clock: Callable[[], float] = time.time,
    handlers: dict[str, Callable[[Message], None]] | None = None,
    actions: ActionsEngine | None = None,
) -> Agent:
    """The agent with its routes, windows, detector and narrator."""
    summary = settings.summary
    routes = tuple(
        Route.build(s.topic, s.adapter, s.area, s.source_options())
        for s in settings.sensors.subscriptions
    )
    config = AgentConfig(
        topics=topics(settings),
        window_s=summary.window_s,
        interval_s=summary.interval_s,
        max_payload_bytes=settings.sensors.max_payload_bytes,
        anomaly_min_interval_s=summary.anomaly_min_interval_s,
        stream=summary.stream,
        stream_expiry_s=summary.stream_expiry_s,
        language=summary.language,
        home=summary.home,
    )
    store = WindowStore(summary.window_s, **settings.facts.model_dump())
    detector = AnomalyDetector(**settings.anomalies.model_dump())
    narrator = Narrator(
        worker,
        NarratorConfig(
            max_new_tokens=summary.max_new_tokens,
            ask_max_new_tokens=summary.ask_max_new_tokens,
            deadline_s=summary.deadline_s,
        ),
    )
    return Agent(transport, narrator, routes, config, store, detector, clock, handlers, actions)


def topics(settings: Settings) -> Topics:
    """Our own topics from the mqtt section."""
    mqtt = settings.mqtt
    return Topics(
        summary=mqtt.topic("summary"),
        deadletter=mqtt.topic("deadletter"),
        anomaly=mqtt.topic("anomaly"),
        ask=mqtt.topic("ask"),
        answer=mqtt.topic("answer"),
    )


@dataclass(frozen=True, slots=True)
class Service:
    """Everything ``run`` starts and stops, wired but not yet connected."""

    transport: MqttTransport
    worker: InferenceWorker
    agent: Agent
    status: StatusReporter
    publisher: DiscoveryPublisher | None


def assemble(
    settings: Settings,
    generator: Generator,
    clock: Callable[[], float],
    constraint: JsonConstraint | None = None,
) -> Service:
    """Wire the loaded model into the transport, worker, agent, actions, HA and status.

    ``constraint`` is the actions' compiled grammar (:func:`load`); none, no actions.
    """
    ha, mqtt = settings.homeassistant, settings.mqtt
    node = build_node(
        mqtt, ha, settings.sensors.subscriptions, settings.model, model_id=generator.model_id
    )
    approve, reject = mqtt.topic("action/approve"), mqtt.topic("action/reject")
    acting = any(a.mode != "off" for a in settings.actions.allow)
    extra = (topics(settings).ask,) + ((node.status_topic,) if ha.enabled else ())
    extra += (approve, reject) if acting else ()
    transport = build_transport(settings, extra)
    worker = InferenceWorker(generator, settings.summary.max_backlog)
    handlers: dict[str, Callable[[Message], None]] = {}
    publisher: DiscoveryPublisher | None = None
    if ha.enabled:
        publisher = DiscoveryPublisher(
            transport.publish,
            discovery_messages(node, ha.discovery_mode),
            status_topic=node.status_topic,
            jitter_s=ha.birth_jitter_s,
            states=lambda: list(agent.retained.items()),
        )
        handlers[node.status_topic] = lambda message: publisher.on_status(message.payload)
    actions = build_engine(
        settings.actions,
        constraint=constraint,
        generator=generator,
        submit=worker.submit,
        publish=transport.publish,
        event_topic=mqtt.topic("action/event"),
        deadline_s=settings.summary.deadline_s,
        clock=clock,
    )
    if actions is not None:
        handlers.update(actions.handlers(approve=approve, reject=reject))
    agent = build_agent(settings, transport, worker, clock, handlers, actions)
    status = StatusReporter(
        transport.publish,
        mqtt.topic("status"),
        settings.summary.status_interval_s,
        model=generator.model_id,
        agent=agent,
        queue_depth=lambda: worker.depth,
        outbox_size=lambda: transport.outbox_size,
        backlog_counters=lambda: {"merged_total": worker.merged, "dropped_total": worker.dropped},
    )
    return Service(transport, worker, agent, status, publisher)


def load(settings: Settings) -> tuple[Generator, JsonConstraint | None]:
    """The slow, blocking part of start-up: the model, then the actions' grammar."""
    generator = load_generator(settings.model)
    return generator, action_constraint(settings.actions, Path(settings.model.path))


async def run(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Load the model, connect, and serve until ``stop`` is set (default: SIGTERM/SIGINT).

    ``clock`` stamps events and windows; the demo passes a simulated clock.
    """
    if stop is None:
        # Installed first: a SIGTERM during start-up still ends in a clean shutdown.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    # The model loads before we connect, so 'online' means ready to answer.
    generator, constraint = await asyncio.to_thread(load, settings)
    log.info("model_loaded", model=generator.model_id)
    svc = assemble(settings, generator, clock, constraint)
    try:
        await svc.transport.connect()
    except TransportError as exc:
        raise StartupError(str(exc)) from exc
    if svc.publisher is not None:
        svc.publisher.start()

    tasks = [
        asyncio.create_task(svc.worker.run(), name="inference-worker"),
        asyncio.create_task(svc.agent.run(), name="agent"),
        asyncio.create_task(svc.status.run(), name="status"),
    ]
    stuck_after_s = 2 * settings.summary.deadline_s + 30

    def healthy() -> bool:
        return svc.worker.healthy(stuck_after_s) and not any(t.done() for t in tasks)

    watchdog = asyncio.create_task(_watchdog(stop, healthy), name="watchdog")
    sdnotify.notify("READY=1")
    log.info("agent_started", node_id=settings.mqtt.node_id, model=generator.model_id)
    await stop.wait()
    sdnotify.notify("STOPPING=1")
    log.info("agent_stopping")
    if svc.publisher is not None:
        await svc.publisher.close()
    await svc.transport.close()
    for task in (*tasks, watchdog):
        task.cancel()
    await asyncio.gather(*tasks, watchdog, return_exceptions=True)
    log.info(
        "agent_stopped", events=svc.agent.events_total, deadletters=svc.agent.deadletters_total
    )


async def _watchdog(stop: asyncio.Event, healthy: Callable[[], bool]) -> None:
    """Ping systemd's watchdog while healthy.

    The pings come from the event loop, so a blocked loop stops them; ``healthy`` also
    stops them when a generation is stuck far past its deadline or a main task died.
    systemd then restarts the service.
    """
    interval = sdnotify.watchdog_interval()
    if interval is None:
        return
    while not stop.is_set():
        if healthy():
            sdnotify.notify("WATCHDOG=1")
        else:
            log.error("watchdog_withheld", reason="stuck generation or dead task")
        await asyncio.sleep(interval / 2)
