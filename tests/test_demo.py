"""``edge-agent demo``: JSON lines through each broker, Ctrl-C cleanup, and the live view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from edge_agent.demo.simulate import AREAS, DEVICE_AREAS
from edge_agent.demo.state import LINE_KINDS, DemoState, decode
from edge_agent.demo.view import render
from edge_agent.export.tiny import TinyModel
from tests.support.broker import Broker

FAST = ("--speed", "2880", "--interval", "2", "--max-new-tokens", "8", "--threads", "1")
"""A simulated hour every 1.25 s and a summary round every 2 s: quick, and still many."""


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "demo", "--no-ui", *FAST, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _lines(stdout: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert all(line["kind"] in LINE_KINDS for line in lines), lines
    return lines


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> list[dict[str, Any]]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the demo did not exit within {timeout}s\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return _lines(out)


def _assert_approvals_name_their_proposal(lines: list[dict[str, Any]]) -> None:
    proposed = {
        line["action_id"]
        for line in lines
        if line["kind"] == "action" and line.get("event_type") == "proposed"
    }
    for line in lines:
        if line["kind"] == "status" and line["message"].startswith("demo approves "):
            assert line["message"].rsplit(" ", 1)[1] in proposed
        if line["kind"] == "action" and line.get("event_type") == "performed":
            assert line["action_id"] in proposed
            assert line["decided_by"]["by"] == "demo"


def _assert_summaries_of_the_day(lines: list[dict[str, Any]]) -> None:
    summaries = [line for line in lines if line["kind"] == "summary"]
    assert summaries, lines
    assert {s["area"] for s in summaries} - {None} == set(AREAS)
    for summary in summaries:
        assert summary["text"]
        if summary["area"] is None:
            continue  # the whole-home summary: every area's facts
        ids = {f["id"] for f in summary["facts"]}
        devices = {i.rsplit(".", 1)[0] for i in ids}
        # Every fact is about a simulated device of the summary's own area.
        assert devices, summary
        assert all(DEVICE_AREAS[d] == summary["area"] for d in devices), summary
        for fact in summary["facts"]:
            assert fact["min"] <= fact["last"] <= fact["max"]
    metrics = {f["metric"] for s in summaries for f in s["facts"]}
    assert {"temperature", "humidity", "co2"} <= metrics


@pytest.mark.slow
def test_demo_against_a_given_broker_prints_summaries_of_the_simulated_day(
    broker: Broker, tiny_model: TinyModel
) -> None:
    proc = _demo(
        "--duration",
        "12",
        "--model",
        str(tiny_model.int4_dir),
        "--broker",
        f"{broker.host}:{broker.port}",
    )
    lines = _finish(proc)
    assert lines[0]["kind"] == "broker"
    assert lines[0]["kind_of"] == "external"
    assert lines[0]["port"] == broker.port
    assert not Path(lines[0]["workdir"]).exists()
    statuses = [line["message"] for line in lines if line["kind"] == "status"]
    # The demo approves any proposal of its fan by id ('demo approves ...'), if one comes.
    assert [m for m in statuses if not m.startswith("demo approves ")] == [
        "loading the model and connecting",
        "agent online; replaying the simulated day",
    ]
    _assert_approvals_name_their_proposal(lines)
    _assert_summaries_of_the_day(lines)
    replay = [line for line in lines if line["kind"] == "replay"]
    assert replay
    assert [r["messages"] for r in replay] == sorted(r["messages"] for r in replay)


@pytest.mark.slow
def test_demo_with_the_embedded_broker(tiny_model: TinyModel) -> None:
    proc = _demo(
        "--duration", "10", "--model", str(tiny_model.int4_dir), "--broker-impl", "embedded"
    )
    lines = _finish(proc)
    broker = lines[0]
    assert broker["kind"] == "broker"
    assert broker["kind_of"] == "embedded"
    assert broker["name"].startswith("amqtt ")
    assert broker["protocol"] == "3.1.1"  # amqtt speaks MQTT 3.1.1 only
    _assert_summaries_of_the_day(lines)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found.update(int(p) for p in text.split())
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["mosquitto", "embedded"])
def test_ctrl_c_stops_cleanly_and_leaves_nothing_behind(
    impl: str, tiny_model: TinyModel, tmp_path: Path
) -> None:
    assert tiny_model.is_complete()  # so `--model tiny` finds it cached
    proc = _demo("--model", "tiny", "--broker-impl", impl, env={"TMPDIR": str(tmp_path)})
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["kind"] == "broker"
    assert first["kind_of"] == impl
    workdir = Path(first["workdir"])
    assert workdir.parent == tmp_path
    assert workdir.is_dir()
    # The first summary shows the agent, the replay and the viewer are all running.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "the demo exited early"
        if json.loads(line)["kind"] == "summary":
            break
    children = _children(proc.pid)
    if impl == "mosquitto":
        assert children, "no mosquitto child"
    else:
        assert not children, "the embedded broker must not start a process"

    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the demo did not exit within 30s of SIGINT")
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert not workdir.exists()
    assert not list(tmp_path.glob("edge-agent-demo-*"))
    assert not [pid for pid in children if _alive(pid)]


def _summary_payload(area: str, *, fallback: bool) -> bytes:
    fact = {
        "id": f"{area}/climate.temperature",
        "device": f"{area}/climate",
        "area": area,
        "metric": "temperature",
        "last": 21.5,
        "min": 19.0,
        "max": 21.5,
        "unit": "°C",
    }
    doc = {
        "schema_version": 1,
        "title": f"{area}: temperature 21.5 °C",
        "text": f"The {area} is at 21.5 °C.",
        "area": area,
        "severity": "info",
        "facts": [fact],
        "model": "gemma2:tiny",
        "latency_s": 0.1,
        "tokens": {"prompt": 10, "new": 5},
        "fallback": fallback,
        "fallback_reason": "grounding: 99" if fallback else "",
    }
    return json.dumps(doc).encode()


def test_decode_turns_agent_topics_into_line_records() -> None:
    kind, fields = decode(
        "summary/bedroom", _summary_payload("bedroom", fallback=False), "14:05"
    ) or ("", {})
    assert kind == "summary"
    assert fields["area"] == "bedroom"
    assert fields["sim_time"] == "14:05"
    assert fields["facts"][0] == {
        "id": "bedroom/climate.temperature",
        "area": "bedroom",
        "metric": "temperature",
        "last": 21.5,
        "min": 19.0,
        "max": 21.5,
        "unit": "°C",
    }
    anomaly = b'{"schema_version": 1, "event_type": "threshold", "device": "d", "message": "m"}'
    assert decode("anomaly", anomaly, "20:00") == (
        "anomaly",
        {"sim_time": "20:00", "event_type": "threshold", "device": "d", "message": "m"},
    )
    action = b'{"event_type": "proposed", "action": "fan", "device": "d", "reason": "co2"}'
    assert decode("action/event", action, "20:01")[0] == "action"  # type: ignore[index]
    # An area's alert repeated on the whole-home topic, our own availability and broken
    # payloads are not lines.
    assert decode("summary", _summary_payload("bedroom", fallback=False), "x") is None
    assert decode("availability", b"online", "x") is None
    assert decode("summary", b"{not json", "x") is None


def test_live_view_shows_facts_summaries_fallback_anomalies_and_actions() -> None:
    state = DemoState(speed=720)
    state.apply("broker", {"name": "mosquitto 2.0.11", "host": "127.0.0.1", "port": 1883})
    for area, fallback in (("bedroom", False), ("bathroom", True)):
        _kind, fields = decode(
            f"summary/{area}", _summary_payload(area, fallback=fallback), "14:05"
        ) or ("", {})
        state.apply("summary", fields)
    state.apply("anomaly", {"sim_time": "20:10", "message": "co2 is 1450 ppm, above 1200"})
    state.apply(
        "action",
        {"sim_time": "20:11", "event_type": "proposed", "action": "fan", "device": "living"},
    )
    state.sensor(50_000.0, "zigbee2mqtt/bedroom/climate", b'{"temperature": 21.5}', now=100.0)
    state.token("The bedroom")
    state.token(" is warm")

    console = Console(record=True, width=160, height=48)
    console.print(render(state, now=100.5))
    screen = console.export_text()

    assert "mosquitto 2.0.11 127.0.0.1:1883" in screen
    assert "gemma2:tiny" in screen  # the model id, from the summaries
    assert "13:53" in screen  # the sim clock of the last replayed message
    assert "The bedroom is warm" in screen
    assert "FALLBACK The bathroom is at 21.5 °C." in screen
    assert "The bedroom is at 21.5 °C." in screen
    assert "FALLBACK The bedroom" not in screen
    assert "co2 is 1450 ppm, above 1200" in screen
    assert "proposed fan(living)" in screen
    assert "21.5 °C" in screen
    assert state.summaries_total == 2
    assert state.fallbacks_total == 1
