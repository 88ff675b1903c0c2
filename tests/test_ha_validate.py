"""Our discovery payloads, checked by Home Assistant's own MQTT discovery code.

A separate venv with the ``homeassistant`` package (and the MQTT integration's pinned
requirements) is built once under ``~/.cache/edge-agent/ha-venv/<version>-py<x.y.z>``
and reused. In it a script does what HA does with a discovery message: matches the
topic, expands abbreviations, validates the device payload, merges the shared options
into each component, validates each entity with its platform's ``DISCOVERY_SCHEMA`` (and
the stricter ``PLATFORM_SCHEMA_MODERN``, which rejects unknown keys), then renders every
``value_template`` with HA's template engine against sample payloads from our codecs.

Home Assistant 2025.5 and later require Python >= 3.13.2; this machine has 3.13.0, so
2025.4.4 is the newest release that installs. Device-based discovery arrived in 2024.11.
Override with EDGE_AGENT_HA_VERSION / EDGE_AGENT_HA_PYTHON.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.actions.pending import pending_doc
from edge_agent.domain import Anomaly, Answer, AskRequest, MetricFacts, Summary, Window
from edge_agent.ha.discovery import HaNode, component_discovery, device_discovery

HA_VERSION = os.environ.get("EDGE_AGENT_HA_VERSION", "2025.4.4")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-agent" / "ha-venv"

BLUEPRINT = (
    Path(__file__).resolve().parents[1] / "deploy/homeassistant/edge_agent_anomaly_notify.yaml"
)

NODE = HaNode(
    node_id="kitchen-pi",
    base_topic="edge-agent",
    discovery_prefix="homeassistant",
    version="0.1.0",
    model_id="gemma-2-2b-it-int4",
    areas=("Kitchen", "Living Room"),
    support_url="https://example.org/edge-agent",
)

CHECK_SCRIPT = r'''
"""Runs inside the Home Assistant venv: validate discovery like HA's mqtt/discovery.py."""
import asyncio, copy, importlib, json, sys, tempfile
from homeassistant.components.mqtt import discovery as d
from homeassistant.components.mqtt.schemas import DEVICE_DISCOVERY_SCHEMA
from homeassistant.const import __version__ as ha_version
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template

job = json.load(sys.stdin)
prefix, errors, entities = job["prefix"], [], []


def fail(where, exc):
    errors.append(f"{where}: {type(exc).__name__}: {exc}")


for topic, text in job["messages"]:
    match = d.TOPIC_MATCHER.fullmatch(topic.removeprefix(prefix + "/"))
    if not topic.startswith(prefix + "/") or match is None:
        errors.append(f"{topic}: not a discovery topic HA accepts")
        continue
    component, node_id, object_id = match.groups()
    payload = json.loads(text)
    d._replace_all_abbreviations(payload)
    if component == "device":
        try:
            DEVICE_DISCOVERY_SCHEMA(copy.deepcopy(payload))
        except Exception as exc:
            fail(topic, exc)
            continue
        for cid, conf in payload["components"].items():
            conf = dict(conf)
            platform = conf.pop("platform")
            conf["device"], conf["origin"] = payload["device"], payload.get("origin")
            d._merge_common_device_options(conf, payload)
            entities.append((platform, f"{topic}#{cid}", conf))
    else:
        if not d._valid_origin_info(payload):
            errors.append(f"{topic}: invalid origin")
        entities.append((component, topic, payload))


async def render_all():
    hass = HomeAssistant(tempfile.mkdtemp())
    out = []
    for platform, where, conf in entities:
        module = importlib.import_module(f"homeassistant.components.mqtt.{platform}")
        try:
            module.PLATFORM_SCHEMA_MODERN(copy.deepcopy(conf))
            config = module.DISCOVERY_SCHEMA(copy.deepcopy(conf))
        except Exception as exc:
            fail(where, exc)
            continue
        entry = {"platform": platform, "where": where, "unique_id": config.get("unique_id")}
        sample = job["samples"].get(config.get("state_topic"))
        if sample is not None and config.get("value_template") is not None:
            template = Template(config["value_template"].template, hass)
            try:
                entry["state"] = template.async_render_with_possible_json_value(sample)
            except Exception as exc:
                fail(where + " value_template", exc)
        if sample is not None and platform == "event":
            event_type = json.loads(sample).get("event_type")
            entry["event_ok"] = event_type in config["event_types"]
        attrs = config.get("json_attributes_topic")
        if attrs is not None:
            entry["attributes_ok"] = isinstance(json.loads(job["samples"][attrs]), dict)
        out.append(entry)
    await hass.async_stop(force=True)
    return out



def check_blueprint(path):
    """HA's blueprint schema, input substitution, then the automation's structure."""
    from homeassistant.components.automation.config import PLATFORM_SCHEMA
    from homeassistant.components.blueprint import models, schemas
    from homeassistant.helpers import config_validation as cv
    from homeassistant.util.yaml import load_yaml

    try:
        blueprint = models.Blueprint(
            load_yaml(path), expected_domain="automation", schema=schemas.BLUEPRINT_SCHEMA
        )
        chosen = {"anomaly_entity": "event.a", "action_entity": "event.b", "notify_device": "d"}
        use = {"use_blueprint": {"path": "edge-agent.yaml", "input": chosen}}
        config = models.BlueprintInputs(blueprint, use).async_substitute()
        PLATFORM_SCHEMA(config)
        cv.TRIGGER_SCHEMA(config["triggers"])
        cv.CONDITIONS_SCHEMA(config["conditions"])
        cv.SCRIPT_SCHEMA(config["actions"])
        return sorted(blueprint.inputs)
    except Exception as exc:
        fail(path, exc)
        return []


rendered = asyncio.run(render_all())
inputs = check_blueprint(job["blueprint"])
print(json.dumps({"ha_version": ha_version, "errors": errors, "entities": rendered,
                  "blueprint_inputs": inputs}))
'''


def find_python313() -> str | None:
    """A Python 3.13 interpreter: $EDGE_AGENT_HA_PYTHON, PATH, or pyenv's versions."""
    candidates = [os.environ.get("EDGE_AGENT_HA_PYTHON"), shutil.which("python3.13")]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.13*/bin/python3.13"), reverse=True)
    candidates += ["/usr/bin/python3.13", "/usr/local/bin/python3.13"]
    for candidate in filter(None, candidates):
        # pyenv shims exist on PATH even when the version is not selected: try each one.
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.startswith("3.13."):
            return candidate
    return None


def ha_python() -> str:
    """The Python 3.13 Home Assistant runs on; skip without one, fail under CI."""
    python = find_python313()
    if python is None:
        message = "no Python 3.13 interpreter for Home Assistant; set EDGE_AGENT_HA_PYTHON"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


def ha_venv(python: str) -> Path:
    """The cached venv with Home Assistant installed; built on first use (minutes)."""
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    venv = CACHE / f"{HA_VERSION}-py{version}"
    marker = venv / "edge-agent-ready.json"
    if marker.exists():
        return venv
    CACHE.mkdir(parents=True, exist_ok=True)
    # Two test runs on one machine (two checkouts, one cache) must not build the same
    # venv at once: the second's rmtree would delete files the first's pip is using.
    with (CACHE / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            _build_ha_venv(python, venv, marker)
    return venv


def _build_ha_venv(python: str, venv: Path, marker: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, f"homeassistant=={HA_VERSION}"], check=True, timeout=1800)
    # The MQTT integration's own pins (paho-mqtt), as HA would install them at run time.
    requirements = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import json, homeassistant.components.mqtt as m, pathlib;"
            "print(' '.join(json.loads((pathlib.Path(m.__file__).parent / 'manifest.json')"
            ".read_text())['requirements']))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    subprocess.run([*pip, *requirements], check=True, timeout=600)
    elapsed = time.monotonic() - started
    marker.write_text(json.dumps({"homeassistant": HA_VERSION, "build_s": round(elapsed, 1)}))
    print(f"built {venv} in {elapsed:.0f}s")


def samples(node: HaNode) -> dict[str, str]:
    """Payloads our codecs publish on each state topic, to render the templates with."""
    fact = MetricFacts("kettle", "power", 3, 5.0, 0.0, 2000.0, 700.0, 0.0, 60.0, "W", "Kitchen")
    summary = Summary(
        "x" * 300, "The kettle ran.", Window(0.0, 60.0), (fact,), "m", 1.0, 10, 5, "eos"
    )
    area = Summary("Kitchen: kettle on", "…", Window(0.0, 60.0), (fact,), "m", 1.0, 1, 1, "eos")
    anomaly = Anomaly(
        "threshold",
        "kettle",
        "co2",
        900.0,
        600.0,
        "back below",
        threshold=1000.0,
        phase="resolved",
        started_at=60.0,
        peak=1400.0,
        duration_s=540.0,
    )
    alert_on = {"schema_version": 1, "area": "Kitchen", "active": True, "open": [{"metric": "co2"}]}
    alert_off = {"schema_version": 1, "area": None, "active": False, "open": []}
    ask = AskRequest.from_payload(b"is the kettle on?", default_reply_to="a", now=0.0)
    answer = Answer(ask, "Yes, since 10:02.", ("kettle.power",), "m", 0.8)
    status = {
        "schema_version": 1,
        "version": "0.1.0",
        "model": "gemma-2-2b-it-int4",
        "uptime_s": 3600,
        "queue_depth": 0,
        "outbox_size": 2,
        "decode_tok_s": 12.5,
        "last_error": None,
    }
    action = {"schema_version": 1, "event_type": "proposed", "id": "a1", "action": "light.off"}
    return {
        node.topic("summary"): summary.to_payload().decode(),
        node.topic("summary/Kitchen"): area.to_payload().decode(),
        node.topic("summary/Living Room"): area.to_payload().decode(),
        node.topic("anomaly"): anomaly.to_payload().decode(),
        node.topic("alert"): json.dumps(alert_off),
        node.topic("alert/Kitchen"): json.dumps(alert_on),
        node.topic("alert/Living Room"): json.dumps(alert_off),
        node.topic("action/event"): json.dumps(action),
        node.topic("answer"): answer.to_payload().decode(),
        node.topic("status"): json.dumps(status),
        node.topic("action/pending"): json.dumps(pending_doc([], 0.0, 3.0)),
    }


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_home_assistant_accepts_our_discovery() -> None:
    python = ha_python()
    venv = ha_venv(python)
    messages = device_discovery(NODE) + component_discovery(NODE)
    job = {
        "prefix": NODE.discovery_prefix,
        "messages": [[m.topic, m.to_payload().decode()] for m in messages],
        "samples": samples(NODE),
        "blueprint": str(BLUEPRINT),
    }
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK_SCRIPT],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ha_version"] == HA_VERSION
    assert report["errors"] == []
    entities = report["entities"]
    assert len(entities) == 2 * len(component_discovery(NODE))  # both layouts

    by_id: dict[str, list[dict[str, Any]]] = {}
    for entity in entities:
        by_id.setdefault(entity["unique_id"], []).append(entity)
    assert all(
        len(both) == 2 and both[0] == {**both[1], "where": both[0]["where"]}
        for both in by_id.values()
    )
    state = {uid: both[0].get("state") for uid, both in by_id.items()}
    assert state["kitchen-pi_summary"] == "x" * 255
    assert state["kitchen-pi_summary_kitchen"] == "Kitchen: kettle on"
    assert state["kitchen-pi_answer"] == "Yes, since 10:02."
    assert state["kitchen-pi_pending_action"] == "none"
    assert state["kitchen-pi_model"] == "gemma-2-2b-it-int4"
    assert state["kitchen-pi_decode_tok_s"] == "12.5"
    assert state["kitchen-pi_queue_depth"] == "0"
    assert state["kitchen-pi_outbox_size"] == "2"
    assert state["kitchen-pi_uptime_s"] == "3600"
    assert state["kitchen-pi_last_error"] == "none"
    assert by_id["kitchen-pi_anomaly"][0]["event_ok"] is True  # 'resolved' is a known type
    assert state["kitchen-pi_alert_kitchen"] == "ON"
    assert state["kitchen-pi_alert_living_room"] == "OFF"
    assert state["kitchen-pi_alert"] == "OFF"
    assert by_id["kitchen-pi_alert_kitchen"][0]["attributes_ok"] is True
    assert by_id["kitchen-pi_action"][0]["event_ok"] is True
    assert by_id["kitchen-pi_summary"][0]["attributes_ok"] is True
    assert "approve_topic" in report["blueprint_inputs"]
    assert {"notify_reminders", "on_resolved"} <= set(report["blueprint_inputs"])
