"""``edge-agent demo``: the whole idea, offline, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_agent.demo.runner import DemoOptions, main_sync
from edge_agent.errors import StartupError
from edge_agent.logs import configure_logging

EPILOG = """\
examples:
  edge-agent demo                          # simulated day, local broker, default model
  edge-agent demo --no-ui --duration 60    # JSON lines for a minute, then exit
  edge-agent demo --model /var/lib/edge-agent/models/gemma-2-2b-it-int4
  edge-agent demo --broker 192.0.2.10:1883 # use a broker you already run

The sample day is a documented simulation (edge_agent/demo/simulate.py): three rooms,
heating, a window opened at 14:00 and a party that pushes CO2 past 1,400 ppm at 20:00.
"""


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo``."""
    demo = sub.add_parser(
        "demo",
        help="replay a simulated day through a local broker and watch the agent narrate it",
        description="Start a throw-away Mosquitto, run the agent in-process, replay a "
        "simulated home day faster than real time, and print what the agent publishes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="DIR",
        help="model folder (default: build or reuse the cached default model)",
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=720.0,
        help="simulated seconds per real second (default: 720, a day in 2 min)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many real seconds (default: the whole day)",
    )
    demo.add_argument(
        "--window",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="simulated seconds each summary covers (default: 3600)",
    )
    demo.add_argument(
        "--interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="real seconds between summaries (default: 5)",
    )
    demo.add_argument(
        "--max-new-tokens", type=int, default=48, help="tokens per summary (default: 48)"
    )
    demo.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default: 2)")
    demo.add_argument(
        "--broker",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="use this broker instead of starting a local Mosquitto",
    )
    demo.add_argument(
        "--no-ui", action="store_true", help="print JSON lines (the only output mode so far)"
    )
    demo.set_defaults(handler=_demo)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, int(port)


def _default_model() -> Path:
    try:
        from edge_agent.export.tiny import build_tiny_gemma2, default_cache_root

        return build_tiny_gemma2(default_cache_root()).int4_dir
    except ImportError as exc:
        raise StartupError(
            "no --model given and the export extra is missing to build the default one: "
            "pip install 'edge-agent[export]' (scripts/demo does this)"
        ) from exc


def _demo(args: argparse.Namespace) -> int:
    configure_logging("warning", "json")
    model = args.model or _default_model()
    opts = DemoOptions(
        model_dir=model,
        speed=args.speed,
        duration_s=args.duration,
        window_s=args.window,
        interval_s=args.interval,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
        broker=args.broker,
    )
    return main_sync(opts)
