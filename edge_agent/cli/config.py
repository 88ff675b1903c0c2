"""``edge-agent config ...``: validate and show the effective configuration."""

from __future__ import annotations

import argparse
import json
import sys

from edge_agent.cli.options import add_config_option
from edge_agent.errors import ConfigError
from edge_agent.settings import load_settings, masked_dump


def add_config_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``config`` command group."""
    config = sub.add_parser("config", help="check and show configuration")
    config_sub = config.add_subparsers(title="config commands", metavar="COMMAND", required=True)
    check = config_sub.add_parser(
        "check",
        help="validate a config; print the effective config (secrets masked) or every error",
        epilog="example:\n  EDGE_AGENT_MQTT__PORT=8883 edge-agent config check -c config.toml\n\n"
        "exit status: 0 valid, 1 invalid",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(check)
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(masked_dump(settings), indent=2))
    return 0
