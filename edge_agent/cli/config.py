"""``edge-agent config ...``: validate and show the configuration, and document it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_agent.cli.options import add_config_option
from edge_agent.configdoc import render_reference
from edge_agent.errors import ConfigError
from edge_agent.preflight import broker_problems, model_problems, startup_problems
from edge_agent.settings import ENV_PREFIX, Settings, load_settings, masked_dump


def add_config_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``config`` command group."""
    config = sub.add_parser(
        "config",
        help="check, show and document the configuration",
        epilog="examples:\n"
        "  edge-agent config check -c /etc/edge-agent/config.toml\n"
        "  edge-agent config docs --out docs/configuration.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_sub = config.add_subparsers(title="config commands", metavar="COMMAND", required=True)
    check = config_sub.add_parser(
        "check",
        help="validate a config and what it points at; print the effective config "
        "(secrets masked) or one line per problem",
        description="Validate the settings, then what they point at: the model folder "
        "(manifest and every listed file present, non-empty and at its recorded size; "
        "--deep: sha256 checksums), "
        "the TLS CA, certificate and key (must load as PEM), the password file (readable) "
        "and the outbox folder (writable); --connect also logs in to the broker.",
        epilog="examples:\n"
        "  edge-agent config check -c config.toml\n"
        "  edge-agent config check -c config.toml --deep --connect\n"
        "  EDGE_AGENT_MQTT__PORT=8883 edge-agent config check -c config.toml --schema-only\n\n"
        "exit status: 0 valid, 1 invalid (one line per problem on stderr)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(check)
    check.add_argument(
        "--deep", action="store_true", help="also check every model file's sha256 (slow)"
    )
    check.add_argument(
        "--connect", action="store_true", help="also connect and log in to the broker"
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long --connect waits for the broker (default: 5)",
    )
    check.add_argument(
        "--schema-only",
        action="store_true",
        help="check the settings alone, not the files and folders they name (for a config "
        "written before those exist, e.g. Ansible's validate)",
    )
    check.set_defaults(handler=_check)
    docs = config_sub.add_parser(
        "docs",
        help="print the configuration reference (Markdown), generated from the settings",
        description="Render every section, key, type, default, environment variable and "
        "description of the settings as Markdown tables.",
        epilog="examples:\n"
        "  edge-agent config docs | less\n"
        "  edge-agent config docs --out docs/configuration.md   # the committed copy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    docs.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="write here instead of stdout"
    )
    docs.set_defaults(handler=_docs)


def _docs(args: argparse.Namespace) -> int:
    text = render_reference(Settings, ENV_PREFIX)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    problems: list[str] = []
    if not args.schema_only:
        problems += model_problems(settings.model, deep=args.deep)
        files = startup_problems(settings.mqtt)
        problems += files
        if args.connect and not files:  # a wrong TLS file would only fail again here
            problems += broker_problems(settings.mqtt, args.timeout)
    if problems:
        for problem in problems:
            print(f"edge-agent: {problem}", file=sys.stderr)
        return 1
    print(json.dumps(masked_dump(settings), indent=2))
    for warning in settings.actions.warnings():  # loads and runs, but not as it reads
        print(f"warning: {warning}", file=sys.stderr)
    return 0
