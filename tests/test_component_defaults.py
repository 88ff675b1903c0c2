"""The components' keyword defaults are the settings' defaults: one place decides.

A ``WindowStore`` or ``AnomalyDetector`` built with no arguments (tests, the bench, a
library user) behaves like the service on an empty config.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from edge_agent.anomalies import AnomalyDetector
from edge_agent.facts import WindowStore
from edge_agent.settings import AnomalySettings, FactsSettings


def _keyword_defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize(("component", "section"), [(WindowStore, FactsSettings)])
def test_store_defaults_match_settings(component: type, section: type) -> None:
    settings = section().model_dump()
    shared = _keyword_defaults(component).keys() & settings.keys()
    assert {"baseline_s", "stale_min_s", "max_series", "max_devices"} <= shared
    for name in shared:
        assert _keyword_defaults(component)[name] == settings[name], name


def test_detector_defaults_match_settings() -> None:
    settings = AnomalySettings()
    defaults = _keyword_defaults(AnomalyDetector)
    for name in (
        "zscore_k",
        "zscore_min_count",
        "zscore_min_rel_std",
        "cooldown_s",
        "clear_on_recovery",
        "threshold_hysteresis",
        "explain_window_s",
    ):
        assert defaults[name] == getattr(settings, name), name
    assert tuple(defaults["explained_by"]) == tuple(settings.explained_by)
    # No thresholds given means the settings' default ranges, not "no limits".
    assert AnomalyDetector().excursions.metrics == frozenset(settings.thresholds)
    assert AnomalyDetector(thresholds={}).excursions.metrics == frozenset()
