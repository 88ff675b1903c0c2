"""``edge-agent demo``: the whole idea, offline, in one command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from edge_agent.errors import StartupError
from edge_agent.logs import configure_logging

EPILOG = """\
examples:
  edge-agent demo                          # live view: simulated day, local broker, default model
  edge-agent demo --no-ui --duration 60    # JSON lines for a minute, then exit
  edge-agent demo --model tiny --speed 2880  # the tiny random-weight model, a day in 30 s
  edge-agent demo --model /var/lib/edge-agent/models/gemma-2-2b-it-int4
  edge-agent demo --broker 192.0.2.10:1883 # use a broker you already run
  edge-agent demo --broker-impl embedded   # the in-process amqtt broker, even with Mosquitto

The sample day is a documented simulation (edge_agent/demo/simulate.py): three rooms,
heating, a window opened at 14:00 and a party that pushes CO2 past 1,400 ppm at 20:00.

broker: Mosquitto when it is installed, else an MQTT 3.1.1 broker inside this process
(amqtt, from the demo extra). Everything lives in a temporary folder that is removed on
exit, with the broker; Ctrl-C stops cleanly.

--no-ui output: one JSON object per line, "kind" one of broker, status, replay,
summary, anomaly, deadletter, action. Without a terminal, --no-ui is implied.

exit status: 0 done, 1 start-up error, 130 interrupted (Ctrl-C)
"""

MODEL_TINY = "tiny"
"""``--model tiny``: the tiny random-weight Gemma 2 (fast; narrates gibberish)."""


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo``."""
    demo = sub.add_parser(
        "demo",
        help="replay a simulated day through a local broker and watch the agent narrate it",
        description="Start a throw-away broker, run the agent in-process, replay a "
        "simulated home day faster than real time, and show what the agent publishes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--model",
        default=None,
        metavar="DIR|tiny",
        help="model folder, or 'tiny' for the tiny random-weight test model "
        "(default: prepare or reuse the cached default model)",
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
        help="use this broker (MQTT 5) instead of starting one",
    )
    demo.add_argument(
        "--broker-impl",
        choices=("auto", "mosquitto", "embedded"),
        default="auto",
        help="which broker to start: 'auto' (Mosquitto if installed, else embedded amqtt), "
        "'mosquitto' or 'embedded' (default: auto)",
    )
    demo.add_argument(
        "--no-ui",
        action="store_true",
        help="print JSON lines instead of the live view (the default without a terminal)",
    )
    demo.set_defaults(handler=_demo)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, int(port)


def _tiny_model() -> Path:
    try:
        from edge_agent.export.tiny import build_tiny_gemma2, default_cache_root

        return build_tiny_gemma2(default_cache_root()).int4_dir
    except ImportError as exc:
        raise StartupError(
            "building the tiny model needs the export extra: "
            "pip install 'edge-agent[export]' (scripts/demo does this)"
        ) from exc


def _default_model() -> Path:
    """The default model folder, prepared once and cached.

    Uses the Gemma 3 270M preparation (``edge_agent.export.gemma3``) when this install
    has it, else the tiny random-weight model.
    """
    try:
        gemma3 = importlib.import_module("edge_agent.export.gemma3")
    except ImportError:
        return _tiny_model()
    from edge_agent.export.tiny import default_cache_root

    prepared = gemma3.prepare_gemma3_270m(default_cache_root())
    # The preparation may return the folder itself or an object naming it.
    return Path(getattr(prepared, "int4_dir", getattr(prepared, "path", prepared)))


def _demo(args: argparse.Namespace) -> int:
    ui = not args.no_ui and sys.stdout.isatty()
    # Only warnings, and on stderr: stdout is the JSON lines (the live view shows them itself).
    configure_logging("warning", "json")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    if args.model == MODEL_TINY:
        model = _tiny_model()
    elif args.model is not None:
        model = Path(args.model)
    else:
        model = _default_model()
    # The runner brings the whole service (onnxruntime, paho); import it only to run.
    from edge_agent.demo.runner import DemoOptions, main_sync

    opts = DemoOptions(
        model_dir=model,
        speed=args.speed,
        duration_s=args.duration,
        window_s=args.window,
        interval_s=args.interval,
        max_new_tokens=args.max_new_tokens,
        threads=args.threads,
        broker=args.broker,
        broker_impl=args.broker_impl,
    )
    if not ui:
        return main_sync(opts)
    try:
        # rich comes with the demo extra; JSON lines need nothing more.
        from edge_agent.demo.view import run_live
    except ImportError:
        print(
            "edge-agent: the live view needs rich (pip install 'edge-agent[demo]'); "
            "printing JSON lines",
            file=sys.stderr,
        )
        return main_sync(opts)
    return run_live(opts)
