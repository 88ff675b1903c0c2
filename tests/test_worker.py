"""The inference worker: one at a time, off the loop, merging and dropping by policy."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from structlog.testing import capture_logs

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


def test_a_full_backlog_drops_the_oldest_request_not_the_newest_ask() -> None:
    """Asks sit at the front; the one dropped is still the one that waited longest."""

    async def scenario() -> None:
        gen = GatedGenerator()
        worker = InferenceWorker(gen, max_backlog=3)
        task = await _start(worker)
        running = worker.submit("x", GenerationRequest("running"))
        await asyncio.sleep(0.05)
        asks = [
            worker.submit(f"ask:{n}", GenerationRequest(f"ask{n}"), priority=True) for n in range(6)
        ]
        # ask0..ask2 arrived first: each later ask pushed the oldest waiting one out.
        for dropped in asks[:3]:
            assert await asyncio.wait_for(dropped, 1) is None
        assert (worker.dropped, worker.depth) == (3, 3)
        gen.gate.set()
        kept = await asyncio.wait_for(asyncio.gather(running, *asks[3:]), 5)
        assert all(r is not None for r in kept)
        assert sorted(gen.prompts[1:]) == ["ask3", "ask4", "ask5"]
        task.cancel()

    asyncio.run(scenario())


def test_an_old_digest_goes_before_a_newer_ask() -> None:
    async def scenario() -> None:
        gen = GatedGenerator()
        worker = InferenceWorker(gen, max_backlog=2)
        task = await _start(worker)
        running = worker.submit("x", GenerationRequest("running"))
        await asyncio.sleep(0.05)
        digest = worker.submit("area:kitchen", GenerationRequest("digest"))
        ask = worker.submit("ask:1", GenerationRequest("ask"), priority=True)
        late = worker.submit("ask:2", GenerationRequest("ask2"), priority=True)
        assert await asyncio.wait_for(digest, 1) is None
        gen.gate.set()
        await asyncio.wait_for(asyncio.gather(running, ask, late), 5)
        assert gen.prompts == ["running", "ask2", "ask"]
        task.cancel()

    asyncio.run(scenario())


class StreamingGenerator:
    """Streams one piece per step until cancelled (or 10 s), like the runtime's loop."""

    model_id = "fake"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finished = threading.Event()
        self.stop_reason = ""

    def render(self, user: str) -> str:
        return user

    def generate(self, request: GenerationRequest) -> Generation:
        self.started.set()
        reason = "max_new_tokens"
        for _ in range(1000):
            if request.on_text is not None:
                request.on_text("x")
            if request.cancelled is not None and request.cancelled():
                reason = "cancelled"
                break
            time.sleep(0.01)
        self.stop_reason = reason
        self.finished.set()
        return Generation("x", 1, 1, reason, 0.01)


def test_shutdown_stops_the_running_generation_before_the_loop_closes() -> None:
    """The inference thread must not post stream pieces to a closed event loop."""
    gen = StreamingGenerator()
    posted: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = InferenceWorker(gen, max_backlog=2)
        task = await _start(worker)

        def on_text(delta: str) -> None:  # as the agent's streamer: hop onto the loop
            loop.call_soon_threadsafe(posted.append, delta)

        worker.submit("a", GenerationRequest("p", on_text=on_text))
        assert await asyncio.to_thread(gen.started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        # By the time run() has returned, the generation has ended.
        assert gen.finished.is_set()

    with capture_logs() as logs:
        asyncio.run(scenario())
    assert gen.stop_reason == "cancelled"
    assert posted  # it did stream while running
    assert not [e for e in logs if e["log_level"] in ("warning", "error")], logs
