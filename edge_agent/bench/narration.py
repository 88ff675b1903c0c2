"""What users would read: model share, role errors, top-finding recall, by window shape.

Two sets of windows go through the service's own findings, prompt, grounding check
and fallback (:func:`edge_agent.narrator.plan_summary` and :func:`judge`):

* seeded synthetic windows in five shapes a home produces (a room with temperature,
  humidity and CO2; a bathroom; a zigbee2mqtt door with its battery beside a
  temperature; a CO2 excursion; a quiet bedroom);
* windows cut from real data (the UCI occupancy training file), replayed row by row
  as zigbee2mqtt messages through the real ingest adapter and window store.

Every published text (model or fallback) is then judged by
:mod:`edge_agent.bench.scorer`, which knows only the raw rows, and checked for the
window's top finding. Greedy decoding makes a run repeatable on one machine.
"""

from __future__ import annotations

import csv
import json
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.bench.scorer import Row, Window, score
from edge_agent.domain import Excursion, MetricFacts
from edge_agent.facts import WindowStore
from edge_agent.findings import FindingRules, Findings, find
from edge_agent.grounding import states_finding
from edge_agent.ingest import Payload, build_source
from edge_agent.llm.base import Generator
from edge_agent.narrator import judge, narration_request, plan_summary
from edge_agent.numguard import NumberGuard
from edge_agent.prompts import PROMPT_VERSION, summary_title
from edge_agent.semantics import Naming

WINDOW_S = 3600.0
SHAPES = ("three-metric room", "bathroom", "door + temperature", "co2 excursion", "quiet bedroom")
LIMITS = {"co2": (None, 1200.0)}
"""The default anomaly threshold (``anomalies.thresholds``), as the service uses it."""
_REPO = Path(__file__).resolve().parents[2]
_DATA = "shared/data/uci-occupancy/datatraining.txt"
DEFAULT_DATA = next(
    (p for p in (_REPO.parent / _DATA, _REPO.parent.parent / _DATA) if p.is_file()),
    _REPO.parent / _DATA,
)
"""``../shared/data/uci-occupancy/datatraining.txt`` beside the repository (or beside a
worktree folder of it)."""


@dataclass(frozen=True, slots=True)
class Case:
    """One window: its facts, the raw rows behind them, and the shape it stands for."""

    shape: str
    area: str
    facts: tuple[MetricFacts, ...]
    rows: tuple[Row, ...]
    window_s: float = WINDOW_S
    baseline: tuple[MetricFacts, ...] = ()
    baseline_rows: tuple[Row, ...] = ()
    excursions: tuple[Excursion, ...] = ()


@dataclass(slots=True)
class ShapeTally:
    """What happened to the windows of one shape."""

    total: int = 0
    model: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    role_errors: int = 0
    recalled: int = 0
    bad_titles: int = 0
    lengths: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NarrationResult:
    """Per-shape tallies, and the run's generation totals."""

    model_id: str
    prompt_version: str
    tallies: dict[str, ShapeTally]
    new_tokens: int
    seconds: float


# --- synthetic windows -------------------------------------------------------------------


def _fact(
    device: str, metric: str, unit: str | None, last: float, low: float, high: float,
    slope: float | None = None, changes: tuple[tuple[float, float], ...] = (),
    area: str | None = None,
) -> MetricFacts:  # fmt: skip
    return MetricFacts(
        device, metric, 60, last, low, high, (low + high) / 2, 0.0, WINDOW_S, unit,
        area or device.split("/")[0], slope, changes=changes,
    )  # fmt: skip


def _rows(facts: Sequence[MetricFacts]) -> tuple[Row, ...]:
    """Raw rows a fact could come from: its low, high, changes and last reading."""
    out: list[Row] = []
    for f in facts:
        if f.changes:
            out.append(Row(0.0, f.metric, 1.0 - f.changes[0][1]))
            out += [Row(ts, f.metric, v) for ts, v in f.changes]
        else:
            first, second = (f.min, f.max) if (f.slope_per_h or 0) >= 0 else (f.max, f.min)
            out += [Row(0.0, f.metric, first), Row(WINDOW_S / 2, f.metric, second)]
        out.append(Row(WINDOW_S, f.metric, f.last))
    return tuple(sorted(out, key=lambda r: r.ts))


def _climate(rng: random.Random, device: str, metrics: tuple[str, ...]) -> list[MetricFacts]:
    temp = round(rng.uniform(16.0, 25.0), 1)
    hum = round(rng.uniform(35.0, 75.0), 1)
    co2 = float(rng.choice([420, 455, 540, 701, 860, 980, 1180]))
    made = {
        "temperature": _fact(
            device, "temperature", "°C", temp,
            round(temp - rng.uniform(0.0, 1.2), 1), round(temp + rng.uniform(0.0, 0.6), 1),
            rng.choice([None, 0.3, -0.4]),
        ),
        "humidity": _fact(
            device, "humidity", "%", hum,
            round(hum - rng.uniform(0.0, 8.0), 1), round(hum + rng.uniform(0.0, 3.0), 1),
        ),
        "co2": _fact(
            device, "co2", "ppm", co2, min(co2, 420.0), co2 + rng.randrange(0, 200),
            rng.choice([None, 45.0, -30.0]),
        ),
    }  # fmt: skip
    return [made[m] for m in metrics]


def synthetic_cases(count: int, seed: int = 7) -> list[Case]:
    """``count`` windows of each shape, the same for a given seed."""
    rng = random.Random(seed)
    out: list[Case] = []
    for _ in range(count):
        room = rng.choice(["living_room", "kitchen", "office"])
        facts = tuple(_climate(rng, f"{room}/climate", ("co2", "humidity", "temperature")))
        out.append(Case(SHAPES[0], room, facts, _rows(facts)))
        low, high = round(rng.uniform(45, 60)), round(rng.uniform(75, 92))
        shower = _fact("bathroom/climate", "humidity", "%", high, low, high, 25.0)
        bath = (shower, *_climate(rng, "bathroom/climate", ("temperature",)))
        out.append(Case(SHAPES[1], "bathroom", bath, _rows(bath)))
        flips = ((600.0, 0.0), (900.0, 1.0), (1500.0, 0.0), (1700.0, 1.0))[: rng.randint(1, 4)]
        door = _fact("hallway/front_door", "contact", None, flips[-1][1], 0.0, 1.0, changes=flips)
        battery = _fact(
            "hallway/front_door", "battery", "%", float(rng.choice([94, 61, 12])), 0, 100
        )
        hall = (door, battery, *_climate(rng, "hallway/climate", ("temperature",)))
        out.append(Case(SHAPES[2], "hallway", hall, _rows(hall)))
        peak = float(rng.randrange(1250, 1800))
        now = float(rng.randrange(1210, int(peak) + 1))
        co2 = _fact("bedroom/climate", "co2", "ppm", now, 900.0, peak, 300.0)
        exc = Excursion(
            "bedroom/climate", "co2", 1200.0, "above", 1200.0, peak, now, "ppm", "bedroom"
        )
        bed = (co2, *_climate(rng, "bedroom/climate", ("temperature",)))
        rows = tuple(sorted((*_rows(bed), Row(exc.started_at, "co2", 1210.0)), key=lambda r: r.ts))
        out.append(Case(SHAPES[3], "bedroom", bed, rows, excursions=(exc,)))
        quiet = tuple(_climate(rng, "guest_room/climate", ("humidity", "temperature")))
        out.append(Case(SHAPES[4], "guest_room", quiet, _rows(quiet)))
    return out


# Kept for callers of the previous bench: the synthetic windows.
cases = synthetic_cases


# --- real windows ------------------------------------------------------------------------

_COLUMNS = {"Temperature": "temperature", "Humidity": "humidity", "Light": "illuminance",
            "CO2": "co2", "HumidityRatio": "humidity_ratio"}  # fmt: skip


def read_uci(path: Path) -> Iterator[tuple[float, dict[str, float]]]:
    """(epoch seconds, column -> value) per row of a UCI occupancy file (times as UTC)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for raw in reader:
            values = raw[-len(header) :]
            row = dict(zip(header, values, strict=True))
            stamp = datetime.strptime(row.pop("date"), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            yield stamp.timestamp(), {k: float(v) for k, v in row.items()}


def real_cases(path: Path, count: int, window_s: float = 900.0) -> list[Case]:
    """``count`` windows evenly spread over the file, replayed through the zigbee2mqtt
    adapter and a window store as the service would see them."""
    rows = list(read_uci(path))
    source = build_source("zigbee2mqtt/#", "zigbee2mqtt", "office")
    store = WindowStore(window_s, baseline_s=3600.0, stale_min_s=60.0)
    first = min(120, len(rows) - 1)
    step = max((len(rows) - first) // max(count, 1), 1)
    cuts = set(range(first, len(rows), step)[:count])
    out: list[Case] = []
    for i, (ts, row) in enumerate(rows):
        doc = {_COLUMNS.get(k, k): v for k, v in row.items() if k != "Occupancy"}
        doc["occupancy"] = bool(row.get("Occupancy"))
        for event in source.parse(
            "zigbee2mqtt/office/sensor", Payload(json.dumps(doc).encode()), ts
        ):
            store.add(event)
        if i not in cuts:
            continue
        raw = [
            Row(t, k, v) for t, r in rows[max(0, i - 90) : i + 1] if t >= ts - 3600.0
            for k, v in r.items()
        ]  # fmt: skip
        window = tuple(r for r in raw if r.ts >= ts - window_s)
        out.append(
            Case(
                "uci office",
                "office",
                store.facts(ts),
                window,
                window_s,
                store.facts(ts, 3600.0),
                tuple(r for r in raw if r.ts < ts - window_s),
            )
        )
    return out


# --- running and judging -----------------------------------------------------------------


_RAW_TITLE = re.compile(r"_|(?<![\w.,])[01](?![\w.,])(?!\s?(?:°|%|ppm|lx|hPa|times))")


def bad_title(title: str, case: Case) -> bool:
    """A raw id, an underscore or a bare 0/1 state in a title."""
    raw_ids = {f.device for f in case.facts} | {case.area}
    return bool(_RAW_TITLE.search(title)) or any(
        r in title for r in raw_ids if "/" in r or "_" in r
    )


def _category(reason: str) -> str:
    for needle, label in (
        ("deadline", "deadline"), ("empty", "empty"), ("raw id", "raw id"),
        ("time ", "time"), ("without its unit", "no unit"), ("no finding has", "wrong unit"),
        ("is not a number of", "wrong role"), ("not the current", "not current"),
        ("state", "state word"), ("yes/no", "yes/no"), ("contradicts", "yes/no"),
        ("is not in the findings", "invented"),
    ):  # fmt: skip
        if needle in reason:
            return label
    return "other"


def bench_narration(
    model_dir: Path,
    *,
    windows: int,
    threads: int = 2,
    max_new_tokens: int = 48,
    seed: int = 7,
    data: Path | None = None,
    real_windows: int = 0,
    language: str = "en",
    on_case: Callable[[int, int], None] | None = None,
    guarded: bool = True,
) -> NarrationResult:
    """Narrate every window and tally what users would read (``guarded``: with the
    service's number guard, as in production)."""
    from edge_agent.llm.runtime import OnnxGenerator

    generator = OnnxGenerator.load(model_dir, threads=threads)
    todo = synthetic_cases(windows, seed)
    if data is not None and real_windows > 0:
        todo += real_cases(data, real_windows)
    guard = NumberGuard.from_model_dir(model_dir) if guarded else None
    return run_cases(
        generator,
        todo,
        max_new_tokens=max_new_tokens,
        language=language,
        on_case=on_case,
        guard=guard,
    )


def run_cases(
    generator: Generator,
    todo: Sequence[Case],
    *,
    max_new_tokens: int = 48,
    language: str = "en",
    on_case: Callable[[int, int], None] | None = None,
    guard: NumberGuard | None = None,
) -> NarrationResult:
    """Narrate ``todo`` with ``generator`` through the service's own pipeline."""
    rules = FindingRules(limits=LIMITS, language=language, tz=UTC)
    names = Naming()
    tallies: dict[str, ShapeTally] = {}
    new_tokens, started = 0, time.monotonic()
    for done, case in enumerate(todo, 1):
        found = find(
            case.facts, rules=rules, names=names, excursions=case.excursions,
            baseline=case.baseline, window_s=case.window_s,
        )  # fmt: skip
        text, reason, used, raw = _narrate(
            generator, case, found, names, language, max_new_tokens, guard
        )
        new_tokens += used
        shape = case.shape if case.shape in SHAPES else f"{case.shape}: {_kind(found)}"
        tally = tallies.setdefault(shape, ShapeTally())
        _tally(tally, case, found, text, reason, names, language, raw)
        if on_case is not None:
            on_case(done, len(todo))
    return NarrationResult(
        generator.model_id, PROMPT_VERSION, tallies, new_tokens, time.monotonic() - started
    )


def _kind(found: Findings) -> str:
    top = found.top
    if top is None or not found.notable:
        return "quiet"
    return {"change": "state change", "jump": "jump", "limit": "over limit"}.get(top.kind, top.kind)


def _narrate(
    generator: Generator,
    case: Case,
    found: Findings,
    names: Naming,
    language: str,
    max_new_tokens: int,
    guard: NumberGuard | None,
) -> tuple[str, str, int, str]:
    shown, prompt, fallback = plan_summary(
        generator, names.area(case.area), found, language=language, home="",
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    request = narration_request(
        generator, prompt, max_new_tokens=max_new_tokens, guard=guard, shown=shown
    )
    result = generator.generate(request)
    known = {f.device for f in case.facts} | {case.area}
    text, reason = judge(
        result.text, result.stop_reason, shown, prompt, language=language, known_names=known
    )
    return (fallback if reason else text), reason, result.new_tokens, result.text.strip()


def _tally(
    tally: ShapeTally,
    case: Case,
    found: Findings,
    text: str,
    reason: str,
    names: Naming,
    language: str,
    raw: str,
) -> None:
    tally.total += 1
    if reason:
        label = _category(reason)
        tally.reasons[label] = tally.reasons.get(label, 0) + 1
    else:
        tally.model += 1
    limits = {"co2": (1200.0,)}
    errors = score(text, Window(case.rows, case.baseline_rows, limits))
    if errors:
        tally.role_errors += 1
        tally.examples.append(f"role error {errors[0].detail!r} in {text!r}")
    top = found.top
    if top is None or states_finding(text, top):
        tally.recalled += 1
    elif len(tally.examples) < 6:
        tally.examples.append(f"top finding {top.phrase!r} missing from {text!r}")
    title = summary_title(names.area(case.area), found.items, language)
    if bad_title(title, case):
        tally.bad_titles += 1
        tally.examples.append(f"bad title {title!r}")
    tally.lengths.append(len(text))
    if reason and len(tally.examples) < 6:
        tally.examples.append(f"fallback ({reason}) for the model's {raw[:160]!r}")


def render(result: NarrationResult, *, show: bool = False) -> str:
    """The per-shape table; with ``show`` a few failures of each shape."""
    head = (
        f"{'window shape':30s} {'n':>4s} {'model':>6s} {'role err':>8s} {'recall':>7s} "
        f"{'bad title':>9s} {'median':>6s}  fallbacks by reason"
    )
    lines = [f"model={result.model_id} prompt={result.prompt_version}", head, "-" * len(head)]
    total = ShapeTally()
    for shape, t in result.tallies.items():
        lines.append(_row(shape, t))
        total.total += t.total
        total.model += t.model
        total.role_errors += t.role_errors
        total.recalled += t.recalled
        total.bad_titles += t.bad_titles
        total.lengths += t.lengths
        for k, v in t.reasons.items():
            total.reasons[k] = total.reasons.get(k, 0) + v
    lines += ["-" * len(head), _row("all", total)]
    lines.append(
        f"{result.new_tokens} new tokens in {result.seconds:.1f} s; 'model' is the share "
        "published in the model's words, the rest is the fallback text; 'role err' counts "
        "published texts the independent scorer faults; 'recall': texts that state the "
        "window's top finding"
    )
    if show:
        for shape, t in result.tallies.items():
            lines += [f"  {shape}: {example}" for example in t.examples[:6]]
    return "\n".join(lines)


def _row(shape: str, t: ShapeTally) -> str:
    n = max(t.total, 1)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(t.reasons.items(), key=lambda p: -p[1]))
    median = int(statistics.median(t.lengths)) if t.lengths else 0
    return (
        f"{shape:30s} {t.total:>4d} {t.model / n:>6.0%} {t.role_errors:>8d} "
        f"{t.recalled / n:>7.0%} {t.bad_titles:>9d} {median:>6d}  {reasons}"
    )
