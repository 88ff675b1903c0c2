"""What to listen to, and how windows, facts and anomalies are computed."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.anomalies import DEFAULT_THRESHOLDS
from edge_agent.errors import ConfigError
from edge_agent.explain import DEFAULT_EXPLAINED_BY, DEFAULT_LEVEL_STEPS
from edge_agent.facts import BASELINE_S, STALE_MIN_S
from edge_agent.ingest import SourceOptions, compile_path
from edge_agent.settings.base import Section

AdapterName = Literal["zigbee2mqtt", "statestream", "tasmota", "esphome", "plain", "generic"]
"""Payload adapters; the same names as ``edge_agent.ingest.ADAPTERS``."""


class Subscription(Section):
    """One subscribed topic filter and the payload adapter that parses it."""

    topic: str = Field(
        min_length=1, description="MQTT topic filter, wildcards allowed, e.g. 'zigbee2mqtt/#'."
    )
    adapter: AdapterName = Field(
        "zigbee2mqtt",
        description="Payload adapter: 'zigbee2mqtt' (JSON state, availability), 'statestream' "
        "(Home Assistant mqtt_statestream), 'tasmota' (tele/stat topics), 'esphome' (MQTT "
        "state topics), 'plain' (number or ON/OFF text), 'generic' (JSON read with 'fields').",
    )
    area: str | None = Field(None, description="Area for devices on this topic, if not known.")
    device_areas: dict[str, str] = Field(
        default_factory=dict,
        description="Area per device name as the adapter reports it; wins over 'area'.",
    )
    units: dict[str, str] = Field(
        default_factory=dict,
        description="Unit per metric, or per '<device>.<metric>', used when the payload has "
        "none (and instead of the adapter's built-in guess).",
    )
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Accepted [min, max] per metric, or per '<device>.<metric>'; a message "
        "with a reading outside is dead-lettered as 'out_of_range'.",
    )
    device: str | None = Field(
        None,
        min_length=1,
        description="plain/generic: device name; default is taken from the topic.",
    )
    metric: str | None = Field(
        None,
        min_length=1,
        description="plain: metric name; default is the topic's last level.",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="generic: metric name -> path into the JSON document, e.g. "
        "'sensors[0].temp' or '$.a.b' (quote keys with dots: a[\"x.y\"]). Required for "
        "'generic'.",
    )
    time_path: str | None = Field(
        None,
        min_length=1,
        description="generic: path to the reading's own time in the JSON document (ISO "
        "8601, or epoch seconds or milliseconds), e.g. 'ts'; readings are then filed at "
        "that time. zigbee2mqtt (last_seen) and Tasmota (Time) need no setting.",
    )

    @model_validator(mode="after")
    def _check_adapter_options(self) -> Subscription:
        for key, (low, high) in self.ranges.items():
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"ranges.{key}: expected finite [min, max] with min <= max")
        if self.adapter == "generic":
            if not self.fields:
                raise ValueError("the generic adapter needs 'fields' (metric -> JSON path)")
            for metric, path in self.fields.items():
                try:
                    compile_path(path)
                except ConfigError as exc:
                    raise ValueError(f"fields.{metric}: {exc}") from exc
        elif self.fields:
            raise ValueError("'fields' is only used by the generic adapter")
        if self.time_path is not None:
            if self.adapter != "generic":
                raise ValueError("'time_path' is only used by the generic adapter")
            try:
                compile_path(self.time_path)
            except ConfigError as exc:
                raise ValueError(f"time_path: {exc}") from exc
        if self.device is not None and self.adapter not in ("plain", "generic"):
            raise ValueError("'device' is only used by the plain and generic adapters")
        if self.metric is not None and self.adapter != "plain":
            raise ValueError("'metric' is only used by the plain adapter")
        return self

    def source_options(self) -> SourceOptions:
        """The adapter options as plain values, for ``Route.build``."""
        return SourceOptions(
            units=self.units,
            ranges=self.ranges,
            device_areas=self.device_areas,
            device=self.device,
            metric=self.metric,
            fields=self.fields,
            time_path=self.time_path,
        )


class SensorsSettings(Section):
    """What to listen to."""

    subscriptions: tuple[Subscription, ...] = Field(
        (Subscription(topic="zigbee2mqtt/#"),),
        description="Topic filters to subscribe to, each with its payload adapter.",
    )
    max_payload_bytes: int = Field(
        65536, ge=64, description="Payloads larger than this are dead-lettered unread."
    )
    late_after_s: float = Field(
        30.0,
        gt=0,
        description="A reading whose own time (zigbee2mqtt last_seen, Tasmota Time, a "
        "generic time_path) is older than this when it arrives is late: it joins the "
        "window at its own time but raises no jump or z-score anomaly. Retained "
        "messages are late too.",
    )
    max_clock_skew_s: float = Field(
        60.0,
        ge=0,
        description="A payload time further ahead of this host's clock than this is "
        "distrusted, and the receive time is used instead.",
    )

    @model_validator(mode="after")
    def _check_unique_topics(self) -> SensorsSettings:
        # A message goes to the first matching subscription, so a repeated filter is dead.
        seen: set[str] = set()
        for sub in self.subscriptions:
            if sub.topic in seen:
                raise ValueError(f"topic {sub.topic!r} is subscribed twice")
            seen.add(sub.topic)
        return self


class FactsSettings(Section):
    """How windows are kept and when a sensor counts as stale (keywords of WindowStore)."""

    baseline_s: float = Field(
        BASELINE_S,
        gt=0,
        description="Seconds of readings kept per series for anomaly baselines (z-score); "
        "the summary window is the most recent part of it.",
    )
    max_points_per_series: int = Field(
        10_000, ge=10, description="Readings kept per series at most, whatever their age."
    )
    stale_factor: float = Field(
        3.0,
        gt=1,
        description="A sensor is stale after this many times its usual interval "
        "(median of recent gaps) without a reading.",
    )
    stale_min_s: float = Field(
        STALE_MIN_S,
        ge=0,
        description="Never call a sensor stale before this many seconds of silence.",
    )
    stale_min_gaps: int = Field(
        3, ge=1, le=15, description="Gaps seen before a sensor's usual interval is trusted."
    )
    forget_after_s: float = Field(
        86_400.0,
        gt=0,
        description="A series silent this long is dropped (and no longer reported stale).",
    )
    max_changes: int = Field(
        20, ge=1, le=1000, description="Transitions of a binary sensor kept and reported."
    )
    max_series: int = Field(
        5000,
        ge=1,
        description="Most (device, metric) series kept; a new one past it is dead-lettered "
        "as 'too_many_series'. 5000 is ten times a large home (500 series) and bounds the "
        "windows to about 20 MB of readings at one per minute.",
    )
    max_devices: int = Field(
        1000,
        ge=1,
        description="Most distinct devices kept; a new device past it is dead-lettered as "
        "'too_many_series'. Also bounds the names every narration is checked against.",
    )


class ThresholdBounds(Section):
    """Allowed range of one metric; a reading outside it is an anomaly."""

    min: float | None = Field(None, description="Lowest normal value; None for no floor.")
    max: float | None = Field(None, description="Highest normal value; None for no ceiling.")
    hysteresis: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="An excursion ends once the reading is back inside by this fraction of "
        "the limit; unset: anomalies.threshold_hysteresis.",
    )
    hysteresis_abs: float | None = Field(
        None,
        ge=0,
        description="The same margin in the metric's unit (wins over 'hysteresis'; use it "
        "for limits at or near 0).",
    )
    repeat_s: float | None = Field(
        None,
        gt=0,
        description="Send a 'reminder' every this many seconds while an excursion lasts; "
        "unset (the default): no reminders, one 'started' and one 'resolved'.",
    )

    @model_validator(mode="after")
    def _check_order(self) -> ThresholdBounds:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min {self.min} must be below max {self.max}")
        return self


class ExplainRule(Section):
    """Which state changes explain one metric's jumps and z-scores (keys of ChangeExplainer)."""

    explained_by: tuple[str, ...] | None = Field(
        None,
        description="Metrics whose transitions explain this metric's changes; unset: "
        "anomalies.explained_by; [] never explains (every jump and z-score is an anomaly).",
    )
    window_s: float | None = Field(
        None, ge=0, description="Seconds before or after; unset: anomalies.explain_window_s."
    )


class AnomalySettings(Section):
    """Which readings are anomalies (keywords of AnomalyDetector)."""

    thresholds: dict[str, ThresholdBounds] = Field(
        default_factory=lambda: {
            metric: ThresholdBounds(**bounds) for metric, bounds in DEFAULT_THRESHOLDS.items()
        },
        description="Per metric name, the normal range, e.g. [anomalies.thresholds.co2] "
        "max = 1200.",
    )
    jumps: dict[str, float] = Field(
        default_factory=dict,
        description="Per metric name, the smallest step between two readings that is a "
        "jump, e.g. temperature = 3.",
    )
    zscore_k: float = Field(
        4.0, gt=0, description="A reading |z| >= k standard deviations from the mean is unusual."
    )
    zscore_min_count: int = Field(
        30, ge=2, description="Readings in the baseline before z-scores are trusted."
    )
    zscore_min_rel_std: float = Field(
        0.01,
        ge=0,
        description="Floor on the standard deviation as a fraction of the mean, so "
        "quantised sensors (21.0, 21.1) are not unusual on every step.",
    )
    cooldown_s: float = Field(
        900.0,
        ge=0,
        description="An active jump, z-score or stale anomaly is raised again only after "
        "this long (threshold excursions remind only with their repeat_s).",
    )
    clear_on_recovery: bool = Field(
        True,
        description="Jumps, z-scores, stale: a reading back in range ends the anomaly, so "
        "the next one is raised at once; false lets only the cooldown decide (damps flapping).",
    )
    threshold_hysteresis: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="A threshold excursion ends ('resolved') only once the reading is back "
        "inside the range by this fraction of the limit (co2 max 1200: at or below 1140), so "
        "a value hovering at the limit gives one 'started' and one 'resolved'.",
    )
    explained_by: tuple[str, ...] = Field(
        DEFAULT_EXPLAINED_BY,
        description="Metrics whose transitions (a 0/1 sensor changing, or a level in "
        "level_transitions stepping) explain a jump or z-score in the same device or area: "
        "such a change is reported as a finding of the summary, not as an anomaly.",
    )
    explain_window_s: float = Field(
        600.0,
        ge=0,
        description="A transition this many seconds before or after a jump or z-score "
        "explains it; unexplained ones are published this much later; 0 disables.",
    )
    explain: dict[str, ExplainRule] = Field(
        default_factory=dict,
        description="Per metric name, its own explained_by and window_s, e.g. "
        "[anomalies.explain.co2] explained_by = ['occupancy'].",
    )
    level_transitions: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_LEVEL_STEPS),
        description="Level metrics whose step between two readings of at least this much "
        "is a state-like transition (a lamp switched on or off), e.g. light = 50 (lx).",
    )
