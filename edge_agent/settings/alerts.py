"""How anomaly notifications are paced and where open excursions are kept across restarts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge_agent.settings.base import Section


class AlertsSettings(Section):
    """Rate limits of anomaly notifications, and the saved excursion state."""

    state_path: Path | None = Field(
        None,
        description="JSON file holding the open threshold excursions, so a restart neither "
        "announces an ongoing one again nor loses its start; unset: alerts.json beside "
        "mqtt.outbox_path (systemd: StateDirectory=edge-agent).",
    )
    period_s: float = Field(
        3600.0, gt=0, description="The rolling period the limits below count over."
    )
    per_metric: int = Field(
        2,
        ge=0,
        description="Notifications (started, reminder, z-score, jump, stale) for one metric "
        "of one area per period; more are suppressed and counted on status.",
    )
    per_area: int = Field(4, ge=0, description="Notifications for one area per period.")
    total: int = Field(
        6, ge=0, description="Notifications for the whole agent per period (a busy house)."
    )
    metrics: dict[str, int] = Field(
        default_factory=dict,
        description="Per metric name, its own per_metric limit, e.g. smoke = 20.",
    )
    areas: dict[str, int] = Field(
        default_factory=dict, description="Per area, its own per_area limit, e.g. garage = 1."
    )
