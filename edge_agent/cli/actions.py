"""``edge-agent actions ...``: read the audit log of proposals and decisions."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from typing import Any

from edge_agent.actions.audit import AuditLog, AuditRow
from edge_agent.cli.options import add_config_option
from edge_agent.errors import ConfigError
from edge_agent.settings import load_settings

LOG_EPILOG = """\
examples:
  edge-agent actions log -c /etc/edge-agent/config.toml             # everything
  edge-agent actions log --since 2h -c config.toml                   # the last two hours
  edge-agent actions log --since 2025-06-01T08:00 --json -c config.toml

--since takes a duration (90s, 30m, 2h, 7d) or an ISO date/time (local time unless it
has an offset). --json prints one JSON object per line, with the facts each proposal
was based on.

Kinds: proposed, performed, rejected, expired, failed, no_action; approval_refused (an
approve/reject that did nothing, its reason as the code: retained, malformed,
no_action_id, unknown_id, replay, after_reject, expired, superseded, nothing_pending,
ambiguous, too_early); ignored (a retained question). What decided a step is shown in
<...>: the approving message's topic (retained or not), its "by" field, MQTT 5 user
properties and correlation data, or the condition an auto action ran on.
"""
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_actions_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``actions`` command group."""
    actions = sub.add_parser("actions", help="inspect proposed and performed actions")
    actions_sub = actions.add_subparsers(title="actions commands", metavar="COMMAND", required=True)
    show = actions_sub.add_parser(
        "log",
        help="print the audit log: every proposal and decision",
        epilog=LOG_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(show)
    show.add_argument("--since", default=None, metavar="ISO|DURATION", help="oldest entry")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(handler=_log)


def parse_since(text: str, now: float) -> float:
    """Seconds since the epoch for ``2h``-style durations or ISO date/times."""
    m = _DURATION.match(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError as exc:
        raise ConfigError(
            f"--since {text!r}: expected e.g. 30m, 2h, 7d or 2025-06-01T08:00"
        ) from exc


def format_row(row: AuditRow) -> str:
    """One line a person can read."""
    when = datetime.fromtimestamp(row.ts).isoformat(timespec="seconds")
    args = ", ".join([row.device, *(f"{k}={v}" for k, v in row.params.items())])
    what = f"{row.action}({args})" if row.action else "-"
    why = f" [{row.code}: {row.detail}]" if row.code else ""
    reason = f' "{row.reason}"' if row.reason else ""
    line = f"{when}  {row.kind:<9}  {row.action_id or '-'}  {what}  mode={row.mode or '-'}{why}"
    return line + reason + format_origin(row.origin)


def format_origin(origin: dict[str, Any] | None) -> str:
    """`` by=... via <topic> (retained) props=... corr=...``: what decided a step."""
    if not origin:
        return ""
    parts = []
    if origin.get("verb"):
        parts.append(str(origin["verb"]))
    if origin.get("by"):
        parts.append(f"by={origin['by']}")
    if origin.get("condition"):
        parts.append(f"condition: {origin['condition']}")
    if origin.get("topic"):
        parts.append(f"via {origin['topic']}" + (" (retained)" if origin.get("retained") else ""))
    if origin.get("user_properties"):
        props = ",".join(f"{k}={v}" for k, v in origin["user_properties"])
        parts.append(f"props={props}")
    if origin.get("correlation_data"):
        parts.append(f"corr={origin['correlation_data']}")
    return "  <" + " ".join(parts) + ">" if parts else ""


def _log(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        since = None if args.since is None else parse_since(args.since, time.time())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    path = settings.actions.audit_path
    if not path.exists():
        print(f"no audit log at {path} yet", file=sys.stderr)
        return 0
    audit = AuditLog.open(path, readonly=True)
    try:
        for row in audit.rows(since):
            print(json.dumps(row.to_dict(), ensure_ascii=False) if args.json else format_row(row))
    finally:
        audit.close()
    return 0
