"""Options shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config PATH``: the TOML file; environment variables override it."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="TOML config file (default: built-in defaults). "
        "EDGE_AGENT_<SECTION>__<KEY> environment variables override it.",
    )
