"""How often a model's summaries pass the grounding check, by the shape of the window.

A fixed, seeded set of synthetic windows in four shapes a home produces (a room with
temperature, humidity and CO2; a bathroom; a door beside a temperature; a CO2 alert)
is narrated through the service's own prompt and check. What fails the check is
replaced by the fallback text in production, so the grounded share is what users
read in the model's words. Greedy decoding makes a run repeatable on one machine.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.domain import Anomaly, MetricFacts
from edge_agent.narrate import PROMPT_VERSION, reading_order, summary_prompt
from edge_agent.narrator import narration_request, reject_reason

WINDOW_S = 3600.0

SHAPES = ("three-metric room", "bathroom", "door + temperature", "co2 alert")


@dataclass(frozen=True, slots=True)
class Case:
    """One synthetic window: its facts, any alert, and the shape it stands for."""

    shape: str
    facts: tuple[MetricFacts, ...]
    anomalies: tuple[Anomaly, ...] = ()


@dataclass(slots=True)
class ShapeTally:
    """Grounded and rejected narrations of one shape, with a few rejected texts."""

    grounded: int = 0
    total: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NarrationResult:
    """Per-shape tallies, and the run's generation totals."""

    model_id: str
    prompt_version: str
    tallies: dict[str, ShapeTally]
    new_tokens: int
    seconds: float


def _fact(
    device: str,
    metric: str,
    unit: str | None,
    last: float,
    low: float,
    high: float,
    slope: float | None = None,
    changes: tuple[tuple[float, float], ...] = (),
) -> MetricFacts:
    area = device.split("/")[0]
    return MetricFacts(
        device, metric, 60, last, low, high, (low + high) / 2, 0.0, WINDOW_S, unit, area,
        slope, changes=changes,
    )  # fmt: skip


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


def cases(count: int, seed: int = 7) -> list[Case]:
    """``count`` windows of each shape, the same for a given seed."""
    rng = random.Random(seed)
    out: list[Case] = []
    for _ in range(count):
        room = f"{rng.choice(['living_room', 'kitchen', 'office'])}/climate"
        out.append(Case(SHAPES[0], tuple(_climate(rng, room, ("co2", "humidity", "temperature")))))
        bathroom = _climate(rng, "bathroom/climate", ("humidity", "temperature"))
        out.append(Case(SHAPES[1], tuple(bathroom)))
        flips = ((600.0, 1.0), (900.0, 0.0))[: rng.randint(1, 2)]
        door = _fact("hall/door", "contact", None, flips[-1][1], 0.0, 1.0, changes=flips)
        out.append(Case(SHAPES[2], (door, *_climate(rng, "hall/climate", ("temperature",)))))
        high = float(rng.randrange(1050, 1800))
        co2 = _fact("bedroom/climate", "co2", "ppm", high, 420.0, high, 300.0)
        alert = Anomaly(
            "threshold", "bedroom/climate", "co2", high, WINDOW_S,
            f"bedroom/climate co2 is {high:.2f} ppm, above the 1000.00 ppm limit",
            unit="ppm", area="bedroom", threshold=1000.0,
        )  # fmt: skip
        out.append(
            Case(SHAPES[3], (co2, *_climate(rng, "bedroom/climate", ("temperature",))), (alert,))
        )
    return out


def bench_narration(
    model_dir: Path,
    *,
    windows: int,
    threads: int = 2,
    max_new_tokens: int = 48,
    seed: int = 7,
    on_case: Callable[[int, int], None] | None = None,
) -> NarrationResult:
    """Narrate ``windows`` windows of every shape and tally what passes the check."""
    from edge_agent.llm.runtime import OnnxGenerator

    generator = OnnxGenerator.load(model_dir, threads=threads)
    tallies = {shape: ShapeTally() for shape in SHAPES}
    todo = cases(windows, seed)
    new_tokens, started = 0, time.monotonic()
    for done, case in enumerate(todo, 1):
        # The service lists a window's readings in reading_order (fit_facts does).
        facts = tuple(sorted(case.facts, key=reading_order))
        prompt = summary_prompt(facts, style=generator.prompt_format, anomalies=case.anomalies)
        result = generator.generate(
            narration_request(generator, prompt, max_new_tokens=max_new_tokens)
        )
        new_tokens += result.new_tokens
        text = result.text.strip()
        reason = reject_reason(text, prompt, facts, result.stop_reason)
        tally = tallies[case.shape]
        tally.total += 1
        if reason:
            if len(tally.examples) < 3:
                tally.examples.append((text, reason))
        else:
            tally.grounded += 1
        if on_case is not None:
            on_case(done, len(todo))
    return NarrationResult(
        generator.model_id, PROMPT_VERSION, tallies, new_tokens, time.monotonic() - started
    )


def render(result: NarrationResult, *, show: bool = False) -> str:
    """The per-shape table, and with ``show`` a few rejected texts with their reasons."""
    lines = [
        f"model={result.model_id} prompt={result.prompt_version}",
        f"{'window shape':22s} {'grounded':>9s} {'share':>6s}",
        "-" * 39,
    ]
    grounded = total = 0
    for shape, tally in result.tallies.items():
        grounded, total = grounded + tally.grounded, total + tally.total
        share = tally.grounded / tally.total if tally.total else 0.0
        lines.append(f"{shape:22s} {tally.grounded:>4d}/{tally.total:<4d} {share:>6.0%}")
    lines.append("-" * 39)
    lines.append(f"{'all':22s} {grounded:>4d}/{total:<4d} {grounded / max(total, 1):>6.0%}")
    lines.append(
        f"{result.new_tokens} new tokens in {result.seconds:.1f} s; what fails the check "
        "is published as the fallback text instead"
    )
    if show:
        for shape, tally in result.tallies.items():
            for text, reason in tally.examples:
                lines.append(f"  rejected ({shape}): {text!r} <- {reason}")
    return "\n".join(lines)
