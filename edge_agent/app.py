"""The composition root: the one place that turns settings into wired components."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from edge_agent import sdnotify
from edge_agent.actions.constrain import JsonConstraint
from edge_agent.actions.engine import ActionsEngine
from edge_agent.actions.wiring import action_constraint, build_engine, schema_constraint
from edge_agent.alerts import Alerts
from edge_agent.alertstate import AlertStateFile
from edge_agent.anomalies import AnomalyDetector
from edge_agent.connection import tls_options
from edge_agent.domain import Topics
from edge_agent.errors import ModelError, ServiceFailedError, StartupError, TransportError
from edge_agent.facts import WindowStore
from edge_agent.ha.discovery import discovery_messages
from edge_agent.ha.publisher import DiscoveryPublisher
from edge_agent.ha.wiring import build_node, configured_areas
from edge_agent.llm.base import Generator
from edge_agent.llm.draft import DraftConfig
from edge_agent.llm.openai_backend import OpenAIGenerator, OpenAIOptions
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.metrics import LiveSources, Metrics
from edge_agent.narrator import Narrator, NarratorConfig
from edge_agent.numguard import NumberGuard
from edge_agent.preflight import model_problems, startup_problems
from edge_agent.ratelimit import NotificationLimiter, RateLimits
from edge_agent.results import results_context
from edge_agent.semantics import Naming
from edge_agent.service import Agent, AgentConfig, Route
from edge_agent.settings import ModelSettings, Settings, read_api_key, read_password
from edge_agent.status import StatusReporter
from edge_agent.transport.base import Message
from edge_agent.transport.mqtt import MqttOptions, MqttTransport
from edge_agent.worker import InferenceWorker

log = structlog.get_logger(__name__)


def load_generator(model: ModelSettings) -> Generator:
    """Load, verify and warm up the model folder named in settings (or probe the server)."""
    if model.backend == "openai":
        return OpenAIGenerator.connect(
            OpenAIOptions(
                base_url=model.base_url,
                model=model.name,
                api=model.api,
                api_key=read_api_key(model),
                connect_timeout_s=model.connect_timeout_s,
                read_timeout_s=model.read_timeout_s,
                retries=model.retries,
                context_tokens=model.context_tokens,
            )
        )
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
            short_match_tokens=model.draft_short_match_tokens,
            history_tokens=model.draft_history_tokens,
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
            availability_topic=topics(settings).availability,
            subscriptions=(
                *(s.topic for s in settings.sensors.subscriptions),
                *extra_subscriptions,
            ),
            qos=mqtt.qos,
            username=mqtt.username,
            password=read_password(mqtt),
            protocol=mqtt.protocol,
            tls=tls_options(mqtt),
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
    names = Naming(summary.device_names, summary.area_names)
    routes = tuple(
        Route.build(s.topic, s.adapter, s.area, replace(s.source_options(), on_name=names.learn))
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
        late_after_s=settings.sensors.late_after_s,
        max_clock_skew_s=settings.sensors.max_clock_skew_s,
    )
    store = WindowStore(summary.window_s, **settings.facts.model_dump())
    detector = AnomalyDetector(**settings.anomalies.model_dump())
    alerts = build_alerts(settings, detector, clock())
    narrator = Narrator(
        worker,
        NarratorConfig(
            max_new_tokens=summary.max_new_tokens,
            ask_max_new_tokens=summary.ask_max_new_tokens,
            deadline_s=summary.deadline_s,
            language=summary.language,
            home=summary.home,
            limits={m: (b.min, b.max) for m, b in settings.anomalies.thresholds.items()},
            device_names=summary.device_names,
            area_names=summary.area_names,
        ),
        number_guard(Path(settings.model.path)),
        names=names,
    )
    return Agent(
        transport,
        narrator,
        routes,
        config,
        store,
        detector,
        clock,
        handlers,
        actions,
        alerts,
        excursions=detector.open_in,
        explained=detector.explained_in,
    )


def build_alerts(settings: Settings, detector: AnomalyDetector, now: float) -> Alerts:
    """Rate limits and the saved excursions; restores what was open before a restart."""
    cfg = settings.alerts
    path = cfg.state_path or settings.mqtt.outbox_path.parent / "alerts.json"
    state_file = AlertStateFile(path)
    saved = state_file.load()
    kept = detector.excursions.restore(
        saved.excursions, now=now, max_age_s=settings.facts.forget_after_s
    )
    if saved.excursions:
        log.info("excursions_restored", kept=len(kept), saved=len(saved.excursions))
    limits = RateLimits(
        period_s=cfg.period_s,
        per_metric=cfg.per_metric,
        per_area=cfg.per_area,
        total=cfg.total,
        metrics=cfg.metrics,
        areas=cfg.areas,
    )
    ids = {r.excursion.id for r in kept}
    return Alerts(
        detector.excursions,
        NotificationLimiter(limits, silenced=[s for s in saved.silenced if s in ids]),
        topics=topics(settings),
        state_file=state_file,
        areas=configured_areas(settings.sensors.subscriptions),
    )


def number_guard(model_dir: Path) -> NumberGuard | None:
    """The narrator's number guard for the model's vocabulary; None (and a warning) when
    the vocabulary cannot be read: the grounding check still runs."""
    try:
        return NumberGuard.from_model_dir(model_dir)
    except ModelError as exc:
        log.warning("number_guard_off", error=str(exc))
        return None


def topics(settings: Settings) -> Topics:
    """Our own topics, under ``<base_topic>/<node_id>``."""
    return Topics.under(f"{settings.mqtt.base_topic}/{settings.mqtt.node_id}")


@dataclass(frozen=True, slots=True)
class Service:
    """Everything ``run`` starts and stops, wired but not yet connected."""

    transport: MqttTransport
    worker: InferenceWorker
    agent: Agent
    status: StatusReporter
    publisher: DiscoveryPublisher | None
    metrics: Metrics | None = None


def assemble(
    settings: Settings,
    generator: Generator,
    clock: Callable[[], float],
    constraint: JsonConstraint | None = None,
) -> Service:
    """Wire the loaded model into the transport, worker, agent, actions, HA and status.

    ``constraint`` is the actions' compiled grammar (:func:`load`); none, no actions.
    """
    ha = settings.homeassistant
    node = build_node(settings, model_id=generator.model_id)
    ours = topics(settings)
    approve, reject = ours.action_approve, ours.action_reject
    acting = any(a.mode != "off" for a in settings.actions.allow)
    extra = (ours.ask,) + ((node.status_topic,) if ha.enabled else ())
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
        topics=ours,
        deadline_s=settings.summary.deadline_s,
        clock=clock,
    )
    if actions is not None:
        handlers.update(actions.handlers(approve=approve, reject=reject))
    agent = build_agent(settings, transport, worker, clock, handlers, actions)
    status = StatusReporter(
        transport.publish,
        ours.status,
        settings.summary.status_interval_s,
        model=generator.model_id,
        agent=agent,
        queue_depth=lambda: worker.depth,
        outbox_size=lambda: transport.outbox_size,
        backlog_counters=lambda: {
            "merged_total": worker.merged,
            "dropped_total": worker.dropped,
            "ask_errors_total": agent.ask_errors_total,
            "stream_dropped_offline_total": transport.qos0_dropped_total,
        },
        alert_counters=lambda: agent.alert_counters,
        backend=_backend_health(generator),
    )
    metrics = _metrics(settings, generator, transport, worker, agent)
    return Service(transport, worker, agent, status, publisher, metrics)


def _backend_health(generator: Generator) -> Callable[[], dict[str, object]]:
    if isinstance(generator, OpenAIGenerator):
        remote = generator
        return lambda: {"name": "openai", **remote.health.as_dict()}
    return lambda: {"name": "onnx", "state": "up"}


def _metrics(
    settings: Settings,
    generator: Generator,
    transport: MqttTransport,
    worker: InferenceWorker,
    agent: Agent,
) -> Metrics | None:
    """The Prometheus registry reading the running parts, when ``[metrics] listen`` is set."""
    if settings.metrics.address is None:
        return None
    health = generator.health if isinstance(generator, OpenAIGenerator) else None
    metrics = Metrics(model=generator.model_id, backend=settings.model.backend)
    metrics.track(
        LiveSources(
            events_total=lambda: agent.events_total,
            queue_depth=lambda: worker.depth,
            outbox_size=lambda: transport.outbox_size,
            broker_connected=lambda: transport.connected,
            broker_reconnects_total=lambda: transport.reconnects_total,
            backend_up=lambda: health is None or health.up,
            backend_failures_total=lambda: 0 if health is None else health.failures_total,
            backlog=lambda: {"merged_total": worker.merged, "dropped_total": worker.dropped},
        )
    )
    return metrics


def load(settings: Settings) -> tuple[Generator, JsonConstraint | None]:
    """The slow, blocking part of start-up: the model, then the actions' grammar."""
    generator = load_generator(settings.model)
    if isinstance(generator, OpenAIGenerator):
        return generator, schema_constraint(settings.actions, generator)
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
    # What the config points at (model files, TLS files, password, outbox) is checked
    # before the model loads: a typo then costs a second, and is one line, not a traceback.
    problems = [*model_problems(settings.model), *startup_problems(settings.mqtt)]
    if problems:
        raise StartupError("; ".join(problems))
    # The model loads before we connect, so 'online' means ready to answer.
    generator, constraint = await asyncio.to_thread(load, settings)
    log.info("model_loaded", model=generator.model_id)
    try:
        svc = assemble(settings, generator, clock, constraint)
    except TransportError as exc:
        raise StartupError(str(exc)) from exc
    with results_context(
        svc.metrics.observe if svc.metrics else None,
        model=generator.model_id,
        backend=settings.model.backend,
    ):
        # Inside: every task started here logs its results with model and backend.
        await _serve(settings, svc, stop)


async def _serve(settings: Settings, svc: Service, stop: asyncio.Event) -> None:
    """Connect, start the tasks, and wait for ``stop``; then shut down in order."""
    generator = svc.worker.generator
    address = settings.metrics.address
    if svc.metrics is not None and address is not None:
        try:
            svc.metrics.serve(*address)
        except OSError as exc:
            raise StartupError(f"metrics.listen {settings.metrics.listen}: {exc}") from exc
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
    failure = await _until_stop_or_death(stop, tasks)
    if failure is not None:
        # Said on the retained status before 'offline', so whoever looks knows why.
        svc.status.fatal_error = failure
        try:
            svc.status.publish_now()
        except Exception as exc:  # the status task may be what died
            log.error("status_failed", error=repr(exc))
    sdnotify.notify("STOPPING=1")
    log.info("agent_stopping")
    if svc.publisher is not None:
        await svc.publisher.close()
    await svc.transport.close()
    for task in (*tasks, watchdog):
        task.cancel()
    await asyncio.gather(*tasks, watchdog, return_exceptions=True)
    if svc.metrics is not None:
        svc.metrics.close()
    log.info(
        "agent_stopped", events=svc.agent.events_total, deadletters=svc.agent.deadletters_total
    )
    if failure is not None:
        raise ServiceFailedError(failure)


async def _until_stop_or_death(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> str | None:
    """Wait for ``stop``; if a main task ends first, say which and why (None on stop).

    The agent, the worker and the status loop run until cancelled, so one that returns
    or raises is dead, and a process without it must exit rather than stay up deaf.
    """
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    dead = [t for t in tasks if t in done]
    if not dead:
        return None
    task = dead[0]
    error = None if task.cancelled() else task.exception()
    reason = f"task {task.get_name()} ended: " + (repr(error) if error else "returned")
    log.error("task_died", task=task.get_name(), reason=reason, exc_info=error)
    return reason


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
