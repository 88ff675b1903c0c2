"""``edge-agent run``: the long-running service."""

from __future__ import annotations

import argparse
import asyncio

from edge_agent.cli.options import add_config_option
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

    asyncio.run(app.run(settings))
    return 0
