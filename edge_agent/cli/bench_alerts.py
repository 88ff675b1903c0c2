"""``edge-agent bench alerts``: anomalies and notifications per day of replayed data."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.cli.options import add_config_option
from edge_agent.errors import ConfigError

EPILOG = """\
examples:
  edge-agent bench alerts --data /path/to/uci-occupancy
  edge-agent bench alerts --data datatraining.txt --max co2=1000 --max light=300
  edge-agent bench alerts --data DIR -c /etc/edge-agent/config.toml --json

Replays the UCI occupancy CSV through the real detector twice: as the agent behaved
before (a threshold anomaly again every cooldown_s, no resolved, no explained changes, no
rate limits) and as configured now. Prints anomaly events and phone notifications per
day, the findings that replaced anomalies, and the checks of the alert lifecycle.
"""


def add_alerts_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``edge-agent bench alerts``."""
    alerts = bench_sub.add_parser(
        "alerts",
        help="replay recorded readings: anomalies and notifications per day, before/after",
        description="Replay the UCI occupancy data through the anomaly detector and the "
        "rate limits, before and after the alert lifecycle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    alerts.add_argument(
        "--data", type=Path, required=True, metavar="PATH", help="the CSV or its folder"
    )
    add_config_option(alerts)
    alerts.add_argument(
        "--max",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="a threshold max (repeatable; wins over the config's)",
    )
    alerts.add_argument(
        "--min", action="append", default=[], metavar="METRIC=VALUE", help="a threshold min"
    )
    alerts.add_argument("--json", action="store_true", help="print one JSON document")
    alerts.set_defaults(handler=_alerts)


def _limits(pairs: list[str], side: str, into: dict[str, dict[str, Any]]) -> None:
    for pair in pairs:
        metric, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not metric or number != number:
            raise ConfigError(f"--{side} expects METRIC=NUMBER, not {pair!r}")
        into.setdefault(metric, {})[side] = number


def _alerts(args: argparse.Namespace) -> int:
    from edge_agent.anomalies import AnomalyDetector
    from edge_agent.bench.alerts import (
        before_detector,
        events,
        lifecycle_check,
        rate_limits,
        read_rows,
        replay,
        transitions,
        zscores_near,
    )
    from edge_agent.logs import configure_logging
    from edge_agent.ratelimit import NotificationLimiter
    from edge_agent.settings import load_settings

    configure_logging("warning", "console")
    if not args.data.exists():
        raise ConfigError(f"--data {args.data} does not exist")
    settings = load_settings(args.config)
    anomalies = settings.anomalies.model_dump()
    thresholds: dict[str, dict[str, Any]] = anomalies["thresholds"]
    _limits(args.max, "max", thresholds)
    _limits(args.min, "min", thresholds)
    rows = read_rows(args.data)
    readings = events(rows)
    facts = settings.facts.model_dump()
    window = settings.summary.window_s
    before = replay(
        readings, before_detector(anomalies), limiter=None, old=True, facts=facts, window_s=window
    )
    detector = AnomalyDetector(**anomalies)
    limiter = NotificationLimiter(rate_limits(settings.alerts.model_dump()))
    after = replay(readings, detector, limiter=limiter, old=False, facts=facts, window_s=window)
    days = sorted({datetime.fromtimestamp(ts, UTC).date().isoformat() for ts, _ in rows})
    step = anomalies["level_transitions"].get("light", 100.0)
    marks = transitions(rows, step)
    checks = {
        **lifecycle_check(after.published),
        "zscore_near_transition": zscores_near(
            after.published, marks, anomalies["explain_window_s"]
        ),
        "zscore_near_transition_before": zscores_near(
            before.published, marks, anomalies["explain_window_s"]
        ),
    }
    table: list[dict[str, Any]] = [
        {
            "day": day,
            "before_anomalies": sum(before.anomalies.get(day, {}).values()),
            "before_notifications": before.notifications[day],
            "after_anomalies": sum(after.anomalies.get(day, {}).values()),
            "after_notifications": after.notifications[day],
            "after_by_type": dict(after.anomalies.get(day, {})),
            "suppressed": after.suppressed[day],
            "explained": after.explained[day],
        }
        for day in days
    ]
    doc = {"rows": len(rows), "thresholds": thresholds, "days": table, "checks": checks}
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=1))
        return 0
    print(f"{len(rows)} rows, thresholds {json.dumps(thresholds)}")
    head = f"{'day':<11} {'before':>7} {'notif':>6} | {'after':>6} {'notif':>6} {'suppr':>6} "
    print(head + f"{'explained':>9}  after by type")
    for r in table:
        by = ", ".join(f"{k} {v}" for k, v in sorted(r["after_by_type"].items()))
        print(
            f"{r['day']:<11} {r['before_anomalies']:>7} {r['before_notifications']:>6} | "
            f"{r['after_anomalies']:>6} {r['after_notifications']:>6} {r['suppressed']:>6} "
            f"{r['explained']:>9}  {by}"
        )
    n = max(len(table), 1)
    total = {
        k: sum(r[k] for r in table)
        for k in (
            "before_anomalies",
            "before_notifications",
            "after_anomalies",
            "after_notifications",
            "suppressed",
            "explained",
        )
    }
    print(
        f"{'per day':<11} {total['before_anomalies'] / n:>7.1f} "
        f"{total['before_notifications'] / n:>6.1f} | {total['after_anomalies'] / n:>6.1f} "
        f"{total['after_notifications'] / n:>6.1f} {total['suppressed'] / n:>6.1f} "
        f"{total['explained'] / n:>9.1f}"
    )
    print("checks: " + ", ".join(f"{k} {v}" for k, v in checks.items()))
    return 0
