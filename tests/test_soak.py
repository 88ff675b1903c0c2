"""A short soak: steady zigbee2mqtt states through the real agent and broker, every
reading counted. ``python -m tests.support.soak --rate 1000 --seconds 600`` is the long
one the closing notes report."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.export.tiny import TinyModel
from tests.support.delivery import own_broker
from tests.support.soak import run_soak

pytestmark = pytest.mark.slow


def test_a_steady_flow_of_states_is_counted_in_full(tiny_model: TinyModel, tmp_path: Path) -> None:
    with own_broker(drop_in=True) as broker:
        result = run_soak(broker, tiny_model.int4_dir, tmp_path, rate=300.0, seconds=15.0)
    print(result.summary())
    assert result.acked_by_broker == result.sent == 4500
    assert result.missing == 0, result.summary()
    assert result.deadletters == 0
