"""A failing model server gives fallback summaries and answers with its reason, never a crash."""

from __future__ import annotations

import asyncio
import json

from structlog.testing import capture_logs

from edge_agent.domain import AskRequest
from edge_agent.errors import BackendError
from edge_agent.facts import WindowStore
from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.results import results_context
from edge_agent.transport.base import Message
from tests.test_service import MemoryTransport, ScriptedGenerator, _agent


class DownServer(ScriptedGenerator):
    """A server that refuses every request."""

    def generate(self, request: GenerationRequest) -> Generation:
        raise BackendError("backend_unavailable", "ConnectError: connection refused")


def test_summaries_and_answers_fall_back_with_the_backend_reason() -> None:
    transport, store = MemoryTransport(), WindowStore(600)
    agent, worker = _agent(DownServer(), transport, store)
    seen: list[tuple[str, dict[str, object]]] = []

    async def scenario() -> None:
        with results_context(lambda e, f: seen.append((e, dict(f))), backend="openai"):
            task = asyncio.create_task(worker.run())
            agent.handle(Message("zigbee2mqtt/fridge", json.dumps({"temperature": 4.5}).encode()))
            await asyncio.wait_for(agent.summarise("kitchen", store.facts(1000.0), end=1000.0), 5)
            request = AskRequest.from_payload(
                b"How cold is the fridge?", default_reply_to="t/answer", now=1000.0
            )
            await asyncio.wait_for(agent.answer(request), 5)
            task.cancel()

    with capture_logs():
        asyncio.run(scenario())
    (summary,) = transport.on("t/summary/kitchen")
    assert summary["fallback"] is True
    assert summary["fallback_reason"] == "backend_unavailable"
    assert "4.5 °C" in summary["text"]  # the deterministic fallback still says it
    (answer,) = transport.on("t/answer")
    assert (answer["fallback"], answer["reason"]) == (True, "backend_unavailable")
    events = {event: fields for event, fields in seen}
    assert events["summary_published"]["outcome"] == "fallback"
    assert events["summary_published"]["reason"] == "backend_unavailable"
    assert events["summary_published"]["backend"] == "openai"
    assert events["answer_published"]["reason"] == "backend_unavailable"
    assert agent.narrator_stats[3] == "backend_unavailable: ConnectError: connection refused"
