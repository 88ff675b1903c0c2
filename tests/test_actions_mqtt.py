"""Actions over a real broker: confirm (approve, reject, expiry, unknown/stale ids), auto,
and the approval channel's defences (self-addressed answers, retained and bare PRESS).

The agent, transport, worker and engine are the real ones; only the model is scripted,
so a test can make it propose exactly what it needs. The grammar is compiled against
the tiny model's vocabulary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.actions.engine import ActionsEngine
from edge_agent.actions.prompt import PROMPT_VERSION
from edge_agent.actions.wiring import action_constraint, build_engine
from edge_agent.app import build_agent, build_transport
from edge_agent.cli.actions import add_actions_commands
from edge_agent.domain import MetricFacts, Topics, Window
from edge_agent.export.tiny import TinyModel
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.settings import Settings
from edge_agent.worker import InferenceWorker
from tests.support.broker import Broker
from tests.test_actions_settings import light

LIGHT = (
    '{"action": "hall_light", "device": "hall_lamp", '
    '"params": {"state": "ON", "brightness": 200}, "reason": "it is dark"}'
)


def actions_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``edge-agent actions ...`` in-process (the lead registers it in the main parser)."""
    parser = argparse.ArgumentParser(prog="edge-agent")
    add_actions_commands(parser.add_subparsers(required=True))
    capsys.readouterr()
    args = parser.parse_args(["actions", *argv])
    assert args.handler(args) == 0
    return capsys.readouterr().out


class ScriptedGenerator:
    """Answers every prompt with the next scripted text."""

    model_id = "scripted"
    prompt_format: Literal["chat", "completion"] = "chat"
    context_length = 4096

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render(self, user: str) -> str:
        return f"<user>{user}</user>"

    def generate(self, request: GenerationRequest) -> Generation:
        self.prompts.append(request.prompt)
        text = self.texts.pop(0) if self.texts else '{"action": "none", "reason": ""}'
        return Generation(text, 10, 5, "eos", 0.1)


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def fact(device: str, metric: str = "brightness", value: float = 3.0) -> MetricFacts:
    now = time.time()
    return MetricFacts(device, metric, 1, value, value, value, value, now, now)


class Rig:
    """One agent wired like ``app.run`` does, on the session broker."""

    def __init__(self, broker: Broker, tiny: TinyModel, tmp: Path, *texts: str, **over: Any):
        self.node = f"t-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            mqtt={
                "host": broker.host,
                "port": broker.port,
                "node_id": self.node,
                "outbox_path": tmp / f"{self.node}.sqlite",
            },
            homeassistant={"enabled": False},
            summary={"interval_s": 3600, "stream": False},
            actions={"allow": [light(**over)], "audit_path": tmp / "actions.sqlite"},
        )
        self.base = f"edge-agent/{self.node}"
        self.generator = ScriptedGenerator(*texts)
        self.clock = Clock()
        self.events = broker.client()
        self.events.subscribe(f"{self.base}/action/event")
        self.commands = broker.client()
        self.commands.subscribe("zigbee2mqtt/+/set")
        self.user = broker.client()

    async def run(self, body: Callable[[Rig, ActionsEngine], Awaitable[None]]) -> None:
        approve, reject = f"{self.base}/action/approve", f"{self.base}/action/reject"
        transport = build_transport(self.settings, (f"{self.base}/ask", approve, reject))
        worker = InferenceWorker(self.generator, 4)
        engine = build_engine(
            self.settings.actions,
            constraint=action_constraint(self.settings.actions, self.tiny_dir),
            generator=self.generator,
            submit=worker.submit,
            publish=transport.publish,
            topics=Topics.under(self.base),
            deadline_s=30,
            clock=self.clock,
        )
        assert engine is not None
        handlers = engine.handlers(approve=approve, reject=reject)
        agent = build_agent(self.settings, transport, worker, self.clock, handlers, engine)
        await asyncio.wait_for(transport.connect(), 30)
        tasks = [asyncio.create_task(worker.run()), asyncio.create_task(agent.run())]
        try:
            await asyncio.wait_for(body(self, engine), 60)
        finally:
            await asyncio.wait_for(transport.close(), 30)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for probe in (self.events, self.commands, self.user):
                probe.close()

    tiny_dir: Path

    def run_sync(self, body: Callable[[Rig, ActionsEngine], Awaitable[None]]) -> None:
        """Run the scenario on a fresh event loop."""
        asyncio.run(self.run(body))

    async def event(self, event_type: str) -> dict[str, Any]:
        payload = await asyncio.to_thread(
            self.events.wait_for,
            f"{self.base}/action/event",
            lambda p: json.loads(p)["event_type"] == event_type,
            20,
        )
        return dict(json.loads(payload))

    async def command(self, topic: str, timeout: float = 20) -> bytes:
        return await asyncio.to_thread(self.commands.wait_for, topic, lambda _p: True, timeout)

    async def no_command(self, seconds: float = 1.5) -> None:
        try:
            got = await self.command("zigbee2mqtt/hall_lamp/set", seconds)
        except AssertionError:
            return
        raise AssertionError(f"unexpected command {got!r}")

    async def propose(self, engine: ActionsEngine) -> dict[str, Any]:
        window = Window(self.clock.now - 300, self.clock.now)
        await asyncio.wait_for(engine.propose([fact("hall_lamp")], window), 20)
        return await self.event("proposed")


def rig(broker: Broker, tiny_model: TinyModel, tmp_path: Path, *texts: str, **over: Any) -> Rig:
    r = Rig(broker, tiny_model, tmp_path, *texts, **over)
    r.tiny_dir = tiny_model.int4_dir
    return r


def test_confirm_then_approve_by_id_runs_the_exact_command(
    broker: Broker, tiny_model: TinyModel, tmp_path: Path
) -> None:
    async def body(r: Rig, engine: ActionsEngine) -> None:
        proposed = await r.propose(engine)
        assert proposed["schema_version"] == 1
        assert proposed["action"] == "hall_light"
        assert proposed["params"] == {"state": "ON", "brightness": 200}
        assert proposed["expires_at"] > r.clock.now
        await r.no_command()
        r.user.publish(f"{r.base}/action/approve", json.dumps({"action_id": proposed["id"]}))
        assert await r.command("zigbee2mqtt/hall_lamp/set") == b'{"state": "ON", "brightness": 200}'
        performed = await r.event("performed")
        assert performed["action_id"] == proposed["action_id"]
        # A second approval of the same id is stale: nothing runs again.
        r.user.publish(f"{r.base}/action/approve", json.dumps({"action_id": proposed["id"]}))
        await r.no_command()

    rig(broker, tiny_model, tmp_path, LIGHT).run_sync(body)


def test_press_approves_the_latest_and_reject_cancels(
    broker: Broker, tiny_model: TinyModel, tmp_path: Path
) -> None:
    async def body(r: Rig, engine: ActionsEngine) -> None:
        first = await r.propose(engine)
        r.user.publish(f"{r.base}/action/reject", "PRESS")
        rejected = await r.event("rejected")
        assert rejected["action_id"] == first["id"]
        assert rejected["code"] == "user_rejected"
        await r.no_command()
        second = await r.propose(engine)
        assert second["id"] != first["id"]
        r.clock.now += 5  # a bare PRESS counts only once the proposal was on display
        r.user.publish(f"{r.base}/action/approve", "PRESS")
        assert await r.command("zigbee2mqtt/hall_lamp/set") == b'{"state": "ON", "brightness": 200}'

    rig(broker, tiny_model, tmp_path, LIGHT, LIGHT).run_sync(body)


def test_unknown_ids_do_nothing_and_a_late_approval_expires(
    broker: Broker, tiny_model: TinyModel, tmp_path: Path
) -> None:
    async def body(r: Rig, engine: ActionsEngine) -> None:
        proposed = await r.propose(engine)
        r.user.publish(f"{r.base}/action/approve", json.dumps({"action_id": "nope"}))
        r.user.publish(f"{r.base}/action/approve", "not json at all")
        await r.no_command()
        assert proposed["id"] in engine.pending
        r.clock.now += 61  # past confirm_expiry_s; the engine's loop expires it
        expired = await r.event("expired")
        assert expired["action_id"] == proposed["id"]
        assert expired["code"] == "confirm_timeout"
        r.user.publish(f"{r.base}/action/approve", json.dumps({"id": proposed["id"]}))
        await r.no_command()

    rig(broker, tiny_model, tmp_path, LIGHT, confirm_expiry_s=60).run_sync(body)


def test_an_anomaly_triggers_an_auto_action_and_the_audit_keeps_it(
    broker: Broker, tiny_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sensor in, anomaly, summary, proposal, command out: the service's own trigger."""

    async def body(r: Rig, engine: ActionsEngine) -> None:
        r.user.publish("zigbee2mqtt/hall_lamp", json.dumps({"brightness": 3}))
        r.user.publish("zigbee2mqtt/office", json.dumps({"co2": 1900}))
        assert await r.command("zigbee2mqtt/hall_lamp/set") == b'{"state": "ON", "brightness": 200}'
        performed = await r.event("performed")
        assert performed["mode"] == "auto"
        assert performed["topic"] == "zigbee2mqtt/hall_lamp/set"
        # Cooldown: the same proposal right away is refused with a reason code.
        r.generator.texts.append(LIGHT)
        await asyncio.wait_for(
            engine.propose([fact("hall_lamp")], Window(r.clock.now - 1, r.clock.now)), 20
        )
        assert (await r.event("rejected"))["code"] == "cooldown"
        await r.no_command()

    dark = {"metric": "brightness", "below": 10, "devices": ["hall_lamp"]}
    r = rig(broker, tiny_model, tmp_path, "Office CO2 is high.", LIGHT, mode="auto", when=dark)
    r.run_sync(body)
    assert "co2" in r.generator.prompts[1]  # the proposal saw the facts
    config = tmp_path / "cli.toml"
    config.write_text(f'[actions]\naudit_path = "{tmp_path / "actions.sqlite"}"\n')
    out = actions_cli(capsys, "log", "--since", "1h", "-c", str(config))
    kinds = [line.split()[1] for line in out.splitlines()]
    assert kinds == ["proposed", "performed", "rejected"]
    rows = [
        json.loads(x) for x in actions_cli(capsys, "log", "--json", "-c", str(config)).splitlines()
    ]
    assert rows[0]["facts"]
    assert rows[0]["model"] == "scripted"
    assert rows[0]["prompt_version"] == PROMPT_VERSION
    assert rows[1]["origin"] == {"by": "policy", "condition": "hall_lamp brightness 3 < 10"}
    assert rows[2]["code"] == "cooldown"


def test_a_question_can_neither_approve_nor_answer_onto_a_command_topic(
    broker: Broker, tiny_model: TinyModel, tmp_path: Path
) -> None:
    """Issue 17's first finding, live: ``reply_to`` = our approve topic or a device's."""

    async def body(r: Rig, engine: ActionsEngine) -> None:
        proposed = await r.propose(engine)
        r.clock.now += 10
        letters = broker.client()
        letters.subscribe(f"{r.base}/deadletter")
        approve = f"{r.base}/action/approve"
        for reply_to in (approve, "zigbee2mqtt/hall_lamp/set", f"{r.base}/action/reject"):
            ask = {"q": "How warm is it?", "id": proposed["id"], "reply_to": reply_to}
            r.user.publish(f"{r.base}/ask", json.dumps(ask))
            letter = json.loads(await asyncio.to_thread(letters.wait_for, f"{r.base}/deadletter"))
            assert letter["reason"] == "reply_to_forbidden"
            assert reply_to in letter["detail"]
        # The MQTT 5 Response Topic is checked the same way.
        v5 = broker.client(v5=True)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = approve
        v5.publish(f"{r.base}/ask", "How warm is it?", properties=props)
        letter = json.loads(await asyncio.to_thread(letters.wait_for, f"{r.base}/deadletter"))
        assert letter["reason"] == "reply_to_forbidden"
        # An approval must name the proposal by action_id: its answer-style 'id' is refused.
        r.user.publish(approve, json.dumps({"id": proposed["id"]}))
        refused = await r.event("approval_refused")
        assert refused["code"] == "no_action_id"
        await r.no_command()
        assert proposed["id"] in engine.pending
        for probe in (letters, v5):
            probe.close()

    rig(broker, tiny_model, tmp_path, LIGHT).run_sync(body)


def test_retained_and_ambiguous_presses_do_nothing_and_pending_is_published(
    broker: Broker, tiny_model: TinyModel, tmp_path: Path
) -> None:
    async def body(r: Rig, engine: ActionsEngine) -> None:
        pending_topic = f"{r.base}/action/pending"
        watcher = broker.client()
        watcher.subscribe(pending_topic)
        proposed = await r.propose(engine)
        shown = json.loads(
            await asyncio.to_thread(
                watcher.wait_for, pending_topic, lambda p: json.loads(p)["count"] == 1, 20
            )
        )
        (item,) = shown["pending"]
        assert item["action_id"] == proposed["action_id"]
        assert (item["device"], item["params"], item["reason"]) == (
            "hall_lamp",
            {"state": "ON", "brightness": 200},
            "it is dark",
        )
        r.clock.now += 10
        approve = f"{r.base}/action/approve"
        r.user.publish(approve, "PRESS", retain=True)  # e.g. left over, or forged
        assert (await r.event("approval_refused"))["code"] == "retained"
        r.user.publish(approve, "", retain=True)  # clear it for the broker's other tests
        await r.no_command()
        r.user.publish(approve, json.dumps({"action_id": proposed["id"], "by": "test"}))
        assert await r.command("zigbee2mqtt/hall_lamp/set") == b'{"state": "ON", "brightness": 200}'
        cleared = await asyncio.to_thread(
            watcher.wait_for, pending_topic, lambda p: json.loads(p)["count"] == 0, 20
        )
        assert json.loads(cleared)["pending"] == []
        watcher.close()

    rig(broker, tiny_model, tmp_path, LIGHT, cooldown_s=0).run_sync(body)
