"""Deploy pieces of the model backend and metrics: drop-in, Ansible, Grafana, defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from edge_agent.errors import ConfigError
from edge_agent.metrics import LiveSources, Metrics
from edge_agent.settings import ModelSettings, Settings, read_api_key
from tests.test_systemd import unit_dir, verify

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "deploy" / "ansible" / "roles" / "edge_agent"


def test_the_api_key_drop_in_verifies_and_names_the_setting(tmp_path: Path) -> None:
    result = verify(unit_dir(tmp_path, ("openai-api-key.conf",)), "edge-agent.service")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    dropin = (REPO / "systemd" / "openai-api-key.conf").read_text()
    assert "LoadCredential=openai-api-key:/etc/edge-agent/openai-api-key" in dropin
    assert "Environment=EDGE_AGENT_MODEL__API_KEY_FILE=%d/openai-api-key" in dropin
    assert "api_key_file" in ModelSettings.model_fields


def test_the_api_key_is_read_from_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "openai-api-key").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    model = ModelSettings(
        backend="openai",
        base_url="http://nas:8080/v1",
        name="g",
        api_key_file=Path("openai-api-key"),
    )
    assert read_api_key(model) == "s3cret"
    with pytest.raises(ConfigError, match=r"model\.api_key_file"):
        read_api_key(model.model_copy(update={"api_key_file": tmp_path / "missing"}))


def test_the_openai_backend_needs_its_server_and_model() -> None:
    with pytest.raises(ValueError, match=r"needs model\.base_url and model\.name"):
        ModelSettings(backend="openai")


def test_nothing_listens_by_default() -> None:
    assert Settings().metrics.address is None
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["edge_agent_metrics_listen"] == ""
    template = (ROLE / "templates" / "config.toml.j2").read_text()
    assert "{% if edge_agent_metrics_listen %}" in template
    unit = (REPO / "systemd" / "edge-agent.service").read_text()
    assert not re.search(r"^(ListenStream|ListenDatagram|IPAddressAllow)=", unit, re.MULTILINE)


def test_the_dashboard_queries_only_families_the_agent_serves() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "edge-agent.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"edge_agent_[a-z_]+", e)}
    metrics = Metrics(model="m", backend="onnx")
    metrics.track(
        LiveSources(
            *(lambda: 0 for _ in range(7)), backlog=lambda: {"merged_total": 0, "dropped_total": 0}
        )
    )
    metrics.observe("summary_published", {"new_tokens": 1, "latency_s": 1.0})
    metrics.observe("action_decided", {"outcome": "none"})
    metrics.observe("payload_rejected", {"reason": "not_json"})
    served = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert used <= served, used - served
    assert {p["id"] for p in dashboard["panels"]} == set(range(1, len(dashboard["panels"]) + 1))
