"""The inference worker: one at a time, off the loop, merging and dropping by policy."""

from __future__ import annotations

import asyncio
import threading

import pytest

from edge_agent.llm.base import Generation, GenerationRequest
from edge_agent.worker import InferenceWorker


class GatedGenerator:
    """A fake generator that blocks until released, and records where it ran."""

    model_id = "fake"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.threads: list[str] = []
        self.prompts: list[str] = []

    def render(self, user: str) -> str:
        return user

    def generate(self, request: GenerationRequest) -> Generation:
        self.threads.append(threading.current_thread().name)
        self.gate.wait(timeout=10)
        self.prompts.append(request.prompt)
        return Generation(request.prompt.upper(), 1, 1, "eos", 0.01)


async def _start(worker: InferenceWorker) -> asyncio.Task[None]:
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0)
    return task


def test_generation_runs_off_the_event_loop_thread() -> None:
    async def scenario() -> None:
        gen = GatedGenerator()
        gen.gate.set()
        worker = InferenceWorker(gen, max_backlog=2)
        task = await _start(worker)
        result = await asyncio.wait_for(worker.submit("a", GenerationRequest("hi")), 5)
        assert result is not None
        assert result.text == "HI"
        assert gen.threads[0].startswith("inference")
        task.cancel()

    asyncio.run(scenario())


def test_same_key_merges_and_full_backlog_drops_oldest() -> None:
    async def scenario() -> None:
        gen = GatedGenerator()
        worker = InferenceWorker(gen, max_backlog=2)
        task = await _start(worker)
        running = worker.submit("x", GenerationRequest("running"))
        await asyncio.sleep(0.05)  # let the worker take it; it now blocks on the gate
        first_a = worker.submit("a", GenerationRequest("a1"))
        second_a = worker.submit("a", GenerationRequest("a2"))  # supersedes a1
        b = worker.submit("b", GenerationRequest("b"))
        c = worker.submit("c", GenerationRequest("c"))  # backlog full: drops a2, the oldest
        assert await asyncio.wait_for(first_a, 1) is None
        assert await asyncio.wait_for(second_a, 1) is None
        assert (worker.merged, worker.dropped, worker.depth) == (1, 1, 2)
        gen.gate.set()
        results = await asyncio.wait_for(asyncio.gather(running, b, c), 5)
        assert [r.text for r in results if r] == ["RUNNING", "B", "C"]
        assert gen.prompts == ["running", "b", "c"]
        task.cancel()

    asyncio.run(scenario())


def test_a_failed_generation_does_not_stop_the_worker() -> None:
    class Failing(GatedGenerator):
        def generate(self, request: GenerationRequest) -> Generation:
            if request.prompt == "boom":
                raise RuntimeError("boom")
            return super().generate(request)

    async def scenario() -> None:
        gen = Failing()
        gen.gate.set()
        worker = InferenceWorker(gen, max_backlog=2)
        task = await _start(worker)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(worker.submit("a", GenerationRequest("boom")), 5)
        ok = await asyncio.wait_for(worker.submit("a", GenerationRequest("fine")), 5)
        assert ok is not None
        assert ok.text == "FINE"
        task.cancel()

    asyncio.run(scenario())


def test_priority_requests_jump_the_queue() -> None:
    async def scenario() -> None:
        gen = GatedGenerator()
        worker = InferenceWorker(gen, max_backlog=4)
        task = await _start(worker)
        running = worker.submit("x", GenerationRequest("running"))
        await asyncio.sleep(0.05)
        digest = worker.submit("area:kitchen", GenerationRequest("digest"))
        ask = worker.submit("ask:1", GenerationRequest("ask"), priority=True)
        gen.gate.set()
        await asyncio.wait_for(asyncio.gather(running, digest, ask), 5)
        assert gen.prompts == ["running", "ask", "digest"]
        task.cancel()

    asyncio.run(scenario())
