"""The ``edge-agent`` command line: the only place that turns arguments into settings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edge_agent import __version__
from edge_agent.cli.actions import add_actions_commands
from edge_agent.cli.bench import add_bench_command
from edge_agent.cli.config import add_config_commands
from edge_agent.cli.demo import add_demo_command
from edge_agent.cli.ha import add_ha_commands
from edge_agent.cli.model import add_model_commands
from edge_agent.cli.run import add_run_command
from edge_agent.errors import StartupError

EPILOG = """\
examples:
  edge-agent config check --config /etc/edge-agent/config.toml
  edge-agent model build-tiny            # a tiny random-weight Gemma 2 for tests
  edge-agent run --config config.toml    # the service (systemd runs this)
  edge-agent demo                        # a simulated day, offline, in one command

Every setting can be overridden by an environment variable: EDGE_AGENT_<SECTION>__<KEY>,
for example EDGE_AGENT_MQTT__HOST=broker.local.
"""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, one sub-command module per command group."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="On-device LLM assistant for MQTT sensor networks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_run_command(sub)
    add_config_commands(sub)
    add_model_commands(sub)
    add_demo_command(sub)
    add_ha_commands(sub)
    add_actions_commands(sub)
    add_bench_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except StartupError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
