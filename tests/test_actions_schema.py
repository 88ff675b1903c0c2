"""Actions on a model server: the proposal grammar as a JSON schema, and its wiring."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from structlog.testing import capture_logs

from edge_agent.actions.dfa import compile_grammar
from edge_agent.actions.grammar import build_grammar
from edge_agent.actions.policy import History, Policy
from edge_agent.actions.schema import proposal_schema
from edge_agent.actions.wiring import ServerSchemaConstraint, build_engine, schema_constraint
from edge_agent.domain import MetricFacts, Topics, Window
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.settings import ActionSpec, ActionsSettings
from tests.test_actions_settings import light

LIGHT = (
    '{"action": "hall_light", "device": "hall_lamp", '
    '"params": {"state": "ON", "brightness": 200}, "reason": "it is dark"}'
)


class Server:
    """A model server that does, or does not, honour JSON schemas."""

    model_id = "openai:test@nas:8080"
    prompt_format = "completion"
    context_length = 2048

    def __init__(self, honours: bool) -> None:
        self.honours = honours

    def supports_json_schema(self) -> bool:
        return self.honours

    def count_tokens(self, text: str) -> int:
        return len(text) // 3

    def render(self, user: str) -> str:
        return user


def grammar_accepts(specs: tuple[ActionSpec, ...], text: str) -> bool:
    dfa = compile_grammar(build_grammar(specs, 200))
    state = dfa.start
    for byte in text.encode():
        state = int(dfa.trans[state][byte])
    return bool(dfa.accepting[state])


def test_the_schema_has_one_branch_per_live_action_and_none() -> None:
    specs = (ActionSpec(**light()), ActionSpec(**light(id="porch_light", mode="off")))
    schema = proposal_schema(specs, 120)
    hall, none = schema["anyOf"]
    assert list(hall["properties"]) == ["action", "device", "params", "reason"]
    assert hall["required"] == ["action", "device", "params", "reason"]
    assert hall["properties"]["action"]["const"] == "hall_light"
    assert hall["properties"]["device"]["enum"] == ["hall_lamp"]
    params = hall["properties"]["params"]
    assert params["properties"]["state"] == {"type": "string", "enum": ["ON", "OFF"]}
    assert params["properties"]["brightness"] == {"type": "integer", "minimum": 0, "maximum": 254}
    assert params["additionalProperties"] is False
    assert none["properties"]["action"]["const"] == "none"
    assert none["properties"]["reason"]["maxLength"] == 120
    json.dumps(schema)  # plain JSON, ready for a request body


def test_a_document_of_the_schema_is_one_the_grammar_and_the_policy_accept() -> None:
    specs = (ActionSpec(**light()),)
    assert grammar_accepts(specs, LIGHT)
    policy = Policy(specs, reason_max=200)
    candidate, verdict = policy.validate(
        json.loads(LIGHT), devices={"hall_lamp"}, history=History(), now=time.time(), pending=[]
    )
    assert verdict.ok, verdict
    assert candidate is not None
    assert candidate.params == {"state": "ON", "brightness": 200}


def test_a_server_without_schemas_turns_actions_off_with_a_reason(tmp_path: Path) -> None:
    settings = ActionsSettings(allow=[light()], audit_path=tmp_path / "audit.sqlite")
    with capture_logs() as logs:
        assert schema_constraint(settings, Server(honours=False)) is None
    (line,) = [entry for entry in logs if entry["event"] == "actions_disabled"]
    assert "JSON schema" in line["why"]
    assert isinstance(schema_constraint(settings, Server(honours=True)), ServerSchemaConstraint)
    off = ActionsSettings(allow=[light(mode="off")], audit_path=tmp_path / "audit.sqlite")
    assert schema_constraint(off, Server(honours=True)) is None


def test_proposals_go_to_the_server_with_the_schema_and_the_policy_decides(
    tmp_path: Path,
) -> None:
    settings = ActionsSettings(allow=[light(mode="propose")], audit_path=tmp_path / "a.sqlite")
    constraint = schema_constraint(settings, Server(honours=True))
    assert isinstance(constraint, ServerSchemaConstraint)
    sent: list[GenerationRequest] = []
    published: list[tuple[str, bytes | str]] = []

    async def submit(key: str, request: GenerationRequest) -> Generation | None:
        sent.append(request)
        return Generation(LIGHT, 120, 30, "eos", 1.5)

    def publish(topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        published.append((topic, payload))

    engine = build_engine(
        settings,
        constraint=constraint,
        generator=Server(honours=True),
        submit=submit,
        publish=publish,
        topics=Topics.under("edge-agent/n"),
        deadline_s=30,
    )
    assert engine is not None
    assert engine.warmup is None  # no vocabulary masks to warm for a server
    now = time.time()
    facts = [MetricFacts("hall_lamp", "brightness", 1, 3.0, 3.0, 3.0, 3.0, now, now)]

    async def propose() -> object:
        return await asyncio.wait_for(engine.propose(facts, Window(now - 60, now)), timeout=10)

    with capture_logs() as logs:
        event = asyncio.run(propose())
    assert event is not None
    (request,) = sent
    assert request.json_schema == constraint.schema
    assert request.logits_processor is None
    (decided,) = [entry for entry in logs if entry["event"] == "action_decided"]
    assert decided["outcome"] == "proposed"
    assert (decided["prompt_tokens"], decided["new_tokens"], decided["facts"]) == (120, 30, 1)
    assert published[0][0] == "edge-agent/n/action/event"
