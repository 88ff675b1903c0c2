"""``edge-agent bench``: prefill/decode speed, TTFT, load time and RSS, with peers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from edge_agent.cli.bench_alerts import add_alerts_bench
from edge_agent.errors import ConfigError, ModelError

EPILOG = """\
examples:
  edge-agent bench model --model ~/models/gemma2-2b-int4
  edge-agent bench model --model DIR --peers --genai-model GENAI_DIR --gguf model-q4_0.gguf \\
      --peer-python ~/.cache/edge-agent/bench-venv/bin/python

  edge-agent bench model --model DIR --peers --genai-model GENAI_DIR --gguf FILE \\
      --runs 4 --rounds 3                                    # a noisy or shared machine

Every engine runs in its own process (its peak RSS is its own), one after another,
on the same token ids. Peers need onnxruntime-genai / llama-cpp-python in the peer
Python; a missing package or model skips that peer with a message. Numbers are
medians of --runs runs; compare ratios, not absolute numbers, on a shared machine.
With --rounds N every engine is measured N times, in alternating order, and each
ratio is the median of the N ratios taken between neighbours in time.
"""

_DEFAULT_PEER_VENV = Path.home() / ".cache" / "edge-agent" / "bench-venv" / "bin" / "python"


def add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``edge-agent bench model|ingest|names|loop|broker|actions|narration``."""
    group = sub.add_parser(
        "bench",
        help="benchmarks that print ratios against a peer measured in the same run",
        description="Benchmarks: each measures a peer in the same run and prints ratios.",
    )
    bench_sub = group.add_subparsers(title="benchmarks", metavar="BENCH", required=True)
    _add_ingest(bench_sub)
    _add_broker(bench_sub)
    _add_actions(bench_sub)
    _add_narration(bench_sub)
    add_alerts_bench(bench_sub)
    _add_verify(bench_sub)
    _add_loop(bench_sub)
    bench = bench_sub.add_parser(
        "model",
        help="measure the runtime (and peers) on a model folder",
        description="Benchmark our runtime, optionally against onnxruntime-genai and llama.cpp.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--model", type=Path, required=True, metavar="DIR", help="our model folder")
    bench.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    bench.add_argument(
        "--context",
        type=int,
        default=2048,
        help="KV cache size in tokens for us and llama.cpp, capped by the model's (2048; "
        "onnxruntime-genai sizes its own to each request)",
    )
    bench.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (128)")
    bench.add_argument("--new-tokens", type=int, default=64, help="tokens to generate (64)")
    bench.add_argument("--runs", type=int, default=6, help="timed runs; medians are shown (6)")
    bench.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every engine this many times, alternating their order; ratios are "
        "the median of each round's (1; use 3+ on a busy or virtual machine)",
    )
    bench.add_argument(
        "--prefix-tokens", type=int, default=400, help="cached head for the TTFT test (400)"
    )
    bench.add_argument("--suffix-tokens", type=int, default=100, help="tail after the head (100)")
    bench.add_argument("--peers", action="store_true", help="also measure the peers below")
    bench.add_argument(
        "--genai-model", type=Path, metavar="DIR", help="onnxruntime-genai builder folder"
    )
    bench.add_argument("--gguf", type=Path, metavar="FILE", help="the same weights as GGUF")
    bench.add_argument(
        "--peer-python",
        default=None,
        metavar="PYTHON",
        help=f"interpreter with the peer packages (default: {_DEFAULT_PEER_VENV} if it "
        "exists, else this one)",
    )
    bench.add_argument("--timeout", type=float, default=1800.0, help="per engine, seconds")
    bench.add_argument("--json", action="store_true", help="print results as JSON lines too")
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    # Deferred: the bench pulls in the tokenizer and subprocess machinery only when used.
    from edge_agent.bench.report import render_rounds
    from edge_agent.bench.runner import Contender, run_rounds
    from edge_agent.bench.workload import build
    from edge_agent.llm.manifest import Manifest

    for name in ("threads", "prompt_tokens", "new_tokens", "runs", "rounds"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    manifest = Manifest.from_dir(args.model)
    encode, decode = _tokenizer(args.model)
    context = min(args.context, manifest.context_length)
    if args.prompt_tokens + args.new_tokens >= context:
        raise ConfigError(f"prompt plus new tokens do not fit the context of {context} tokens")
    prefix, suffix = args.prefix_tokens, args.suffix_tokens
    if prefix + suffix + 8 >= context:
        # A small test model: keep the head/tail proportions within half the context.
        scale = (context // 2) / (prefix + suffix)
        prefix, suffix = max(1, int(prefix * scale)), max(1, int(suffix * scale))
        print(f"note: prefix/suffix cut to {prefix}/{suffix} tokens to fit the context")
    work = build(
        encode,
        decode,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        prefix_tokens=prefix,
        suffix_tokens=suffix,
        runs=args.runs,
    )
    contenders = [Contender("edge-agent", args.model, sys.executable)]
    if args.peers:
        python = args.peer_python or (
            str(_DEFAULT_PEER_VENV) if _DEFAULT_PEER_VENV.is_file() else sys.executable
        )
        contenders += [
            Contender("onnxruntime-genai", args.genai_model or Path("missing"), python),
            Contender("llama.cpp", args.gguf or Path("missing.gguf"), python),
        ]
    rounds = run_rounds(
        contenders,
        work,
        rounds=args.rounds,
        threads=args.threads,
        context=context,
        timeout_s=args.timeout,
    )
    for results in rounds:
        if results[0].skipped:
            raise ModelError(f"our runtime failed on {args.model}: {results[0].skipped}")
    if args.json:
        for number, results in enumerate(rounds, 1):
            for result in results:
                print(json.dumps({"round": number, **asdict(result)}))
    print(f"threads={args.threads} runs={args.runs} rounds={args.rounds} model={args.model}")
    print(render_rounds(rounds))
    return 0


def _tokenizer(
    model_dir: Path,
) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    """Encode/decode with the folder's tokenizer, as the runtime does (no special tokens)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # tokenizers raises a bare Exception for unreadable or malformed files.
    except Exception as exc:
        raise ModelError(f"cannot load {model_dir / 'tokenizer.json'}: {exc}") from exc

    def encode(text: str) -> list[int]:
        ids: list[int] = tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode(ids: list[int]) -> str:
        text: str = tokenizer.decode(ids, skip_special_tokens=False)
        return text

    return encode, decode


def _add_ingest(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = bench_sub.add_parser(
        "ingest",
        help="parse -> window -> anomaly throughput on one core, against json.loads",
        description="Synthetic zigbee2mqtt stream (50 devices) through the adapter, the "
        "windows and the anomaly detector, on one core; the peer is plain json.loads.",
        epilog="example:\n  taskset -c 0 edge-agent bench ingest --messages 200000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_argument("--messages", type=int, default=200_000, help="messages (200000)")
    ingest.add_argument("--repeats", type=int, default=3, help="best of this many runs (3)")
    ingest.set_defaults(handler=_ingest)
    names = bench_sub.add_parser(
        "names",
        help="agent RSS and ask round trip before/after N distinct device names",
        description="Starts a local Mosquitto and `edge-agent run` on MODEL, measures the ask "
        "round trip and the agent's RSS, publishes N readings from N distinct zigbee2mqtt "
        "device names, and measures both again. The broker runs with the shipped drop-in's "
        "max_queued_messages 0 and set_tcp_nodelay true, and the asker turns Nagle off: "
        "with Mosquitto's default each ask waits ~40 ms for a delayed TCP ACK.",
        epilog="example:\n  edge-agent bench names --model ~/.cache/edge-agent/models/tiny "
        "--count 100000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names.add_argument("--model", type=Path, required=True, help="model folder to serve")
    names.add_argument("--count", type=int, default=100_000, help="distinct names (100000)")
    names.add_argument("--asks", type=int, default=5, help="asks timed before and after (5)")
    names.set_defaults(handler=_names)


def _add_loop(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    loop = bench_sub.add_parser(
        "loop",
        help="how long an ask and a digest hold the event loop with many series",
        description="The real agent with an instant model: the wall time of an ask and of a "
        "digest, and the longest event-loop stall, with 20 series and with --series in "
        "--areas areas (edge_agent/bench/loop.py).",
        epilog="example:\n  edge-agent bench loop --series 1000 --areas 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    loop.add_argument("--series", type=int, default=1000, help="series in the store (1000)")
    loop.add_argument("--areas", type=int, default=1, help="areas they are spread over (1)")
    loop.add_argument("--repeats", type=int, default=5, help="timed runs; medians shown (5)")
    loop.set_defaults(handler=_loop)


def _loop(args: argparse.Namespace) -> int:
    from edge_agent.bench.loop import bench_loop, render
    from edge_agent.logs import configure_logging

    if args.series < 1 or args.areas < 1 or args.repeats < 1:
        raise ConfigError("--series, --areas and --repeats must be at least 1")
    configure_logging("error", "console")
    print(render(bench_loop(args.series, args.areas, args.repeats)))
    return 0


def _add_broker(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    broker = bench_sub.add_parser(
        "broker",
        help="sustained QoS 1 messages through a local Mosquitto into the agent, vs plain paho",
        description="One publisher process sends numbered QoS 1 messages through a fresh local "
        "Mosquitto while the consumer receives them: first a plain paho client, then our "
        "transport + adapter + windows. Prints messages/s, lost and duplicated messages, the "
        "ratio, the share received while publishing, and the CPU of consumer and publisher.",
        epilog="examples:\n  edge-agent bench broker --messages 100000\n"
        "  edge-agent bench broker --messages 100000 --rate 5000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    broker.add_argument("--messages", type=int, default=100_000, help="messages (100000)")
    broker.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="MSGS_PER_S",
        help="pace the publisher at this offered load (open loop); default 0: closed loop, "
        "as fast as the consumer takes them",
    )
    broker.set_defaults(handler=_broker)


def _ingest(args: argparse.Namespace) -> int:
    from edge_agent.bench.ingest import bench_ingest, render

    print(render(bench_ingest(args.messages, repeats=args.repeats)))
    return 0


def _names(args: argparse.Namespace) -> int:
    from edge_agent.bench.names import bench_names, render

    if args.count < 1 or args.asks < 1:
        raise ConfigError("--count and --asks must be at least 1")
    from edge_agent.app import load_generator
    from edge_agent.bench.names import ask_loop_ms
    from edge_agent.settings import ModelSettings

    generator = load_generator(ModelSettings(path=args.model, threads=1, verify=False))
    for names in (20, args.count):
        kept, times = ask_loop_ms(generator, names)
        print(
            f"in-process, {names} names offered ({kept} series kept): an ask's work "
            f"on the event loop: median {sorted(times)[len(times) // 2]:.1f} ms, "
            f"max {max(times):.1f} ms"
        )
    print(render(bench_names(args.model, args.count, args.asks)))
    return 0


def _broker(args: argparse.Namespace) -> int:
    from edge_agent.bench.broker import bench_broker, render
    from edge_agent.logs import configure_logging

    if args.messages < 1 or args.rate < 0:
        raise ConfigError("--messages must be at least 1 and --rate not negative")
    configure_logging("warning", "console")
    results = bench_broker(args.messages, args.rate)
    print(render(results, args.messages, args.rate))
    return 0 if all(r.lost == 0 for r in results) else 1


def _add_actions(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    actions = bench_sub.add_parser(
        "actions",
        help="constrained-decoding cost per token, against the model's unconstrained step",
        description="Times the proposal constraint (mask lookup or computation plus masking) "
        "per token, cold and warm, against the unconstrained decode step of the same model "
        "in the same run; also the mask warm-up and the masks' memory. See "
        "edge_agent/actions/bench.py for the method.",
        epilog="example:\n  edge-agent bench actions --model ~/models/gemma3-270m",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions.add_argument("--model", type=Path, required=True, metavar="DIR", help="model folder")
    actions.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    actions.add_argument("--runs", type=int, default=5, help="rounds; medians are shown (5)")
    actions.add_argument(
        "--new-tokens", type=int, default=96, help="token budget per generation (96)"
    )
    actions.add_argument("--json", action="store_true", help="print the result as JSON too")
    actions.add_argument(
        "--windows",
        type=int,
        default=0,
        help="instead of timing: the proposal share over N seeded windows, half with a "
        "CO2 alert (edge_agent/actions/bench_share.py)",
    )
    actions.add_argument("--seed", type=int, default=7, help="seed of the windows (7)")
    actions.add_argument(
        "--no-condition", action="store_true", help="the fan without its 'when' condition"
    )
    actions.add_argument("--show", action="store_true", help="print every window's output")
    actions.set_defaults(handler=_actions)


def _actions(args: argparse.Namespace) -> int:
    from edge_agent.actions.bench import bench_actions, render
    from edge_agent.logs import configure_logging

    configure_logging("warning", "console")
    if args.windows:
        from edge_agent.actions.bench_share import bench_share, render_share

        share = bench_share(
            args.model,
            windows=args.windows,
            seed=args.seed,
            threads=args.threads,
            condition=not args.no_condition,
            new_tokens=args.new_tokens,
        )
        print(render_share(share, show=args.show))
        return 0
    result = bench_actions(
        args.model, threads=args.threads, runs=args.runs, new_tokens=args.new_tokens
    )
    if args.json:
        print(json.dumps(asdict(result)))
    print(render(result))
    return 0


NARRATION_EPILOG = """\
examples:
  edge-agent bench narration --model "$(edge-agent model prepare gemma3-270m | tail -n 1)"
  edge-agent bench narration --model DIR --data ../shared/data/uci-occupancy/datatraining.txt \\
      --real-windows 60 --show

Two sets of windows go through the service's own findings, prompt, grounding check
and fallback (edge_agent/bench/narration.py): seeded synthetic windows of five shapes
(a three-metric room, a bathroom shower, a zigbee2mqtt door with its battery, a CO2
excursion, a quiet room), and windows cut from real data (the UCI occupancy file),
replayed as zigbee2mqtt messages through the real ingest. Per shape it prints the
share published in the model's words, the fallbacks by reason, the published texts an
independent scorer faults (a number in the wrong role, a wrong state word), how many
texts state the window's top finding, titles with a raw id, and the median length.
"""


def _add_narration(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge_agent.bench.narration import DEFAULT_DATA

    narration = bench_sub.add_parser(
        "narration",
        help="what users read: model share, role errors and top-finding recall, by window shape",
        description="Narrate seeded synthetic windows and windows of real data, and judge "
        "every published text.",
        epilog=NARRATION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    narration.add_argument("--model", type=Path, required=True, metavar="DIR", help="model folder")
    narration.add_argument(
        "--windows", type=int, default=8, help="synthetic windows of each shape (default 8)"
    )
    narration.add_argument("--seed", type=int, default=7, help="window generator seed (7)")
    narration.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA if DEFAULT_DATA.is_file() else None,
        metavar="PATH",
        help="UCI occupancy file for real windows (default: "
        "../shared/data/uci-occupancy/datatraining.txt beside the repository, if present)",
    )
    narration.add_argument(
        "--real-windows", type=int, default=40, help="windows cut from --data (default 40)"
    )
    narration.add_argument("--language", default="en", help="language of the texts (en)")
    narration.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    narration.add_argument("--max-new-tokens", type=int, default=48, help="tokens per summary (48)")
    narration.add_argument("--show", action="store_true", help="print a few failures of each shape")
    narration.add_argument(
        "--no-guard",
        action="store_true",
        help="let the model write any number (the service keeps it to the shown ones)",
    )
    _add_speed_options(narration)
    narration.set_defaults(handler=_narration)


def _narration(args: argparse.Namespace) -> int:
    from edge_agent.bench.narration import bench_narration, render
    from edge_agent.logs import configure_logging

    if args.speed:
        from edge_agent.cli.bench_speed import speed

        return speed(args)

    if args.windows < 1:
        raise ConfigError(f"--windows must be at least 1, not {args.windows}")
    if args.data is not None and not args.data.is_file():
        raise ConfigError(f"--data {args.data} is not a file")
    configure_logging("warning", "console")
    live = sys.stderr.isatty()

    def tick(done: int, total: int) -> None:
        # A counter on one line: the device install has no progress-bar package.
        if live:
            end = "\n" if done == total else ""
            print(f"\rnarrating window {done}/{total}", end=end, file=sys.stderr, flush=True)

    result = bench_narration(
        args.model,
        windows=args.windows,
        threads=args.threads,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        data=args.data,
        real_windows=args.real_windows,
        language=args.language,
        on_case=tick,
        guarded=not args.no_guard,
    )
    print(render(result, show=args.show))
    return 0


def _add_speed_options(narration: argparse.ArgumentParser) -> None:
    speed = narration.add_argument_group(
        "--speed",
        "latency and decode rate of the narration requests with drafting on and off, "
        "against llama.cpp (plain and prompt lookup) and onnxruntime-genai; each engine "
        "in its own process, alternating rounds (edge_agent/bench/speed.py)",
    )
    speed.add_argument("--speed", action="store_true", help="run the speed comparison")
    speed.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    speed.add_argument(
        "--speed-windows",
        type=int,
        default=3,
        help="windows of each shape for --speed, each narrated and asked about (3)",
    )
    speed.add_argument("--ask-max-new-tokens", type=int, default=64, help="tokens per answer (64)")
    speed.add_argument("--gguf", type=Path, metavar="FILE", help="the same weights as GGUF")
    speed.add_argument(
        "--genai-model",
        type=Path,
        metavar="DIR",
        help="onnxruntime-genai folder (default: ours, head on the last position, with a "
        "genai_config.json, made in a temporary folder)",
    )
    speed.add_argument("--peer-python", default=None, metavar="PYTHON", help="peer venv Python")
    speed.add_argument("--no-peers", action="store_true", help="only our runtime, on and off")
    speed.add_argument("--timeout", type=float, default=1800.0, help="per engine, seconds")
    speed.add_argument("--json", action="store_true", help="last line: one JSON object")


def _add_verify(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = bench_sub.add_parser(
        "verify",
        help="cost of one forward pass over k tokens against a one-token step (drafting)",
        description="Time forward passes over k new tokens after a fixed context, for each "
        "folder, alternating folders and k in every round. A folder exported with "
        "--verify-positions K scores min(k, K) rows; against a K=1 folder of the same "
        "weights, the difference is the LM head's cost on those rows.",
        epilog="example:\n  edge-agent model retarget G2B --out G2B-K8 --verify-positions 8\n"
        "  edge-agent bench verify --model G2B --model G2B-K8 --tokens 1 2 4 8 --rounds 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "--model", type=Path, action="append", required=True, metavar="DIR", help="folder(s)"
    )
    verify.add_argument(
        "--tokens", type=int, nargs="+", default=[1, 2, 4, 8], help="k values (1 2 4 8)"
    )
    verify.add_argument("--past", type=int, default=300, help="context before the pass (300)")
    verify.add_argument("--rounds", type=int, default=5, help="alternating rounds (5)")
    verify.add_argument("--repeats", type=int, default=5, help="passes per k per round (5)")
    verify.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    verify.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from edge_agent.bench.verify import measure, render
    from edge_agent.logs import configure_logging

    if min(args.tokens) < 1 or args.rounds < 1 or args.repeats < 1 or args.past < 1:
        raise ConfigError("--tokens, --past, --rounds and --repeats must be at least 1")
    configure_logging("warning", "console")
    costs = measure(
        args.model,
        tuple(args.tokens),
        past=args.past,
        rounds=args.rounds,
        repeats=args.repeats,
        threads=args.threads,
    )
    print(f"threads={args.threads} past={args.past} rounds={args.rounds} repeats={args.repeats}")
    print(render(costs))
    return 0
