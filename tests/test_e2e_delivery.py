"""No QoS 1 reading lost through a broker restart or an agent SIGKILL, with the shipped
Mosquitto drop-in: a sequenced flow through the real agent, checked number by number."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.export.tiny import TinyModel
from tests.support.delivery import own_broker, run_flow

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario", ["restart", "kill"])
def test_a_sequenced_qos1_flow_loses_nothing(
    tiny_model: TinyModel, tmp_path: Path, scenario: str
) -> None:
    # 150 msg/s for 20 s; 6 s without the broker or the agent is ~900 queued messages for
    # the agent's session (a broker restart also ends with every sensor's backlog at once).
    with own_broker(drop_in=True) as broker:
        result = run_flow(
            broker, tiny_model.int4_dir, tmp_path,
            scenario=scenario, total=3000, rate=150.0, outage_s=6.0,
        )  # fmt: skip
    print(result.summary())
    assert result.sent == 3000
    assert result.acked_by_broker == 3000
    assert result.lost == [], f"{len(result.lost)} lost, first {result.lost[:10]}"
    if scenario == "restart":
        assert result.reconnect_s is not None
