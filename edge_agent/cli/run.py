"""``edge-agent run``: the long-running service."""

from __future__ import annotations

import argparse
import asyncio
import sys

from edge_agent.cli.options import add_config_option
from edge_agent.errors import ServiceFailedError
from edge_agent.logs import configure_logging
from edge_agent.settings import load_settings


def add_run_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``run``."""
    run = sub.add_parser(
        "run",
        help="run the agent: subscribe, keep windows, narrate, publish",
        description="Load the model, connect to the broker and serve until SIGTERM/SIGINT.",
        epilog="example:\n  edge-agent run -c /etc/edge-agent/config.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(run)
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    configure_logging(settings.log.level, settings.log.format)
    # Imported here, not at the top: onnxruntime and the whole service load only for
    # `run`, so `--help` and `config check` answer at once on a Pi.
    from edge_agent import app

    try:
        asyncio.run(app.run(settings))
    except ServiceFailedError as exc:
        # Non-zero so systemd's Restart=on-failure starts a fresh process.
        print(f"edge-agent: {exc}; exiting so the service manager restarts it", file=sys.stderr)
        return 1
    return 0
