"""How often the model proposes the right thing: the proposal share over seeded windows.

    edge-agent bench actions --model DIR --windows 40 [--seed 7] [--no-condition]

A third of the windows carry a CO2 alert (an office CO2 reading past 1,000 ppm and the
alert line the anomaly detector writes); a third have calm CO2 and no alert; a third
have calm CO2 and another alert (a humidity or temperature z-score). Every window also has
seeded temperature and humidity readings of a few other rooms, so no two prompts are
alike. The allowlist is a ventilation fan (low risk) and a thermostat (medium risk).
Each window goes through the service's path: the engine's prompt, constrained greedy
decoding over the compiled grammar, then the policy. Reported: the share of CO2 windows
that led to the fan proposal, and the share of calm windows that led to no action; also
how many proposals the grammar had to force (never auto-performed).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.actions.constrain import JsonConstraint
from edge_agent.actions.dfa import compile_grammar
from edge_agent.actions.grammar import build_grammar
from edge_agent.actions.policy import Policy, parse_output
from edge_agent.actions.prompt import proposal_prompt
from edge_agent.actions.types import NO_ACTION
from edge_agent.actions.vocab import TokenArrays, TokenTable
from edge_agent.domain import Anomaly, MetricFacts
from edge_agent.errors import ConfigError, ContextOverflowError
from edge_agent.llm.base import GenerationRequest
from edge_agent.llm.runtime import OnnxGenerator
from edge_agent.settings import ActionSpec

REASON_MAX = 120
CO2_LIMIT = 1000.0
_ROOMS = ("kitchen", "bedroom", "bathroom", "hall", "living room")


def share_specs(*, condition: bool = True) -> tuple[ActionSpec, ...]:
    """The fan (with or without its ``when`` condition) and a thermostat."""
    when = {"metric": "co2", "above": CO2_LIMIT, "devices": ["office"]} if condition else None
    return (
        ActionSpec(
            id="ventilate",
            description="Switch the office ventilation fan",
            topic="cmnd/{device}/POWER",
            payload="{state}",
            devices=("office_fan",),
            risk="low",
            mode="auto",
            when=when,
            params={"state": {"type": "enum", "values": ("ON", "OFF")}},
        ),
        ActionSpec(
            id="heat",
            description="Set a radiator's target temperature",
            topic="zigbee2mqtt/{device}/set",
            payload='{"current_heating_setpoint": {target}}',
            devices=("living_trv",),
            risk="medium",
            mode="confirm",
            params={"target": {"type": "float", "min": 16, "max": 24, "decimals": 1}},
        ),
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """One window's result."""

    alert: bool
    """A CO2 alert window."""
    other: bool
    """Calm CO2, but another alert."""
    action: str
    """The policy-approved action ('none', 'ventilate', ...) or 'invalid'."""
    forced: bool
    text: str


@dataclass(frozen=True, slots=True)
class ShareResult:
    """The shares over all windows (in %)."""

    model: str
    windows: int
    seed: int
    condition: bool
    alert_windows: int
    alert_proposed: int
    """CO2 windows that led to the ventilation proposal."""
    calm_windows: int
    calm_none: int
    """Calm windows without any alert that led to no action."""
    other_windows: int
    other_none: int
    """Calm-CO2 windows with another alert that led to no action."""
    forced: int
    seconds_per_window: float
    outcomes: tuple[Outcome, ...]


def _window(
    rng: random.Random, alert: bool, other: bool = False
) -> tuple[list[MetricFacts], list[Anomaly]]:
    now = time.time()
    co2 = rng.uniform(1250, 2200) if alert else rng.uniform(420, 850)
    lo = co2 * rng.uniform(0.6, 0.9)
    facts = [
        MetricFacts(
            "office", "co2", 12, round(co2), round(lo), round(co2), co2, now - 600, now, "ppm"
        )
    ]
    for room in rng.sample(_ROOMS, rng.randint(1, 3)):
        t = round(rng.uniform(17, 24), 1)
        h = round(rng.uniform(35, 65))
        facts.append(
            MetricFacts(room, "temperature", 12, t, t - 0.4, t + 0.3, t, now - 600, now, "°C")
        )
        facts.append(MetricFacts(room, "humidity", 12, h, h - 3, h + 2, h, now - 600, now, "%"))
    facts.append(MetricFacts("office_fan", "power", 12, 0, 0, 0, 0, now - 600, now))
    anomalies = []
    if alert:
        msg = f"office co2 is {round(co2)} ppm, above the 1200 ppm limit"
        anomalies.append(Anomaly("threshold", "office", "co2", co2, now, msg, threshold=1200.0))
    elif other:
        room = str(facts[1].device)
        metric, value = (
            ("humidity", float(facts[2].last))
            if rng.random() < 0.5
            else (
                "temperature",
                float(facts[1].last),
            )
        )
        msg = f"{room} {metric} is {value:g}, unusual for the last 40 readings (z = 4.6)"
        anomalies.append(Anomaly("zscore", room, metric, value, now, msg, z=4.6))
    return facts, anomalies


def bench_share(
    model_dir: Path,
    *,
    windows: int = 40,
    seed: int = 7,
    threads: int = 2,
    condition: bool = True,
    new_tokens: int = 96,
) -> ShareResult:
    """Generate one proposal per seeded window and count the outcomes."""
    if windows < 3:
        raise ConfigError("--windows must be at least 3")
    gen = OnnxGenerator.load(model_dir, threads=threads)
    specs = share_specs(condition=condition)
    table = TokenTable.from_tokenizer_json(model_dir / "tokenizer.json", gen.manifest.eos_token_ids)
    constraint = JsonConstraint(
        compile_grammar(build_grammar(specs, REASON_MAX)), TokenArrays.pack(table)
    )
    constraint.warm()
    policy = Policy(specs, reason_max=REASON_MAX)
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for i in range(windows):
        alert, other = i % 3 == 0, i % 3 == 2
        facts, anomalies = _window(rng, alert, other)
        prompt = proposal_prompt(facts, specs, style=gen.prompt_format, anomalies=anomalies)
        full = gen.render(prompt.text)
        processor = constraint.processor(new_tokens)
        try:
            result = gen.generate(
                GenerationRequest(
                    full,
                    max_new_tokens=new_tokens,
                    prefix_chars=full.find(prompt.static) + len(prompt.static),
                    logits_processor=processor,
                )
            )
        except ContextOverflowError as exc:  # a small test model's context
            outcomes.append(Outcome(alert, other, "invalid", False, f"({exc})"))
            continue
        doc, verdict = parse_output(result.text)
        action = "invalid"
        if verdict.ok:
            cand, verdict = policy.shape(doc)
            if cand is not None and verdict.ok:
                action = cand.action
        outcomes.append(Outcome(alert, other, action, processor.forced, result.text))
    took = (time.monotonic() - started) / windows
    alerts = [o for o in outcomes if o.alert]
    calm = [o for o in outcomes if not o.alert and not o.other]
    others = [o for o in outcomes if o.other]
    return ShareResult(
        model=str(model_dir),
        windows=windows,
        seed=seed,
        condition=condition,
        alert_windows=len(alerts),
        alert_proposed=sum(o.action == "ventilate" for o in alerts),
        calm_windows=len(calm),
        calm_none=sum(o.action == NO_ACTION for o in calm),
        other_windows=len(others),
        other_none=sum(o.action == NO_ACTION for o in others),
        forced=sum(o.forced and o.action not in (NO_ACTION, "invalid") for o in outcomes),
        seconds_per_window=took,
        outcomes=tuple(outcomes),
    )


def render_share(r: ShareResult, *, show: bool = False) -> str:
    """The two shares, and each window's output with ``show``."""
    pct = 100.0 / max(r.alert_windows, 1)
    calm_pct = 100.0 / max(r.calm_windows, 1)
    lines = [
        f"model {r.model}",
        f"{r.windows} windows, seed {r.seed}, fan {'with' if r.condition else 'without'} "
        f"a 'when' condition; {r.seconds_per_window:.2f} s per window",
        f"CO2 alert -> ventilate proposal: {r.alert_proposed}/{r.alert_windows} "
        f"({r.alert_proposed * pct:.0f}%)",
        f"calm CO2  -> no action:          {r.calm_none}/{r.calm_windows} "
        f"({r.calm_none * calm_pct:.0f}%)",
        f"other alert, calm CO2 -> no action: {r.other_none}/{r.other_windows} "
        f"({100.0 * r.other_none / max(r.other_windows, 1):.0f}%)",
        f"proposals the grammar forced (never auto-performed): {r.forced}",
    ]
    if show:
        lines += [
            f"  {'ALERT' if o.alert else 'other' if o.other else 'calm '} {o.action:<10} "
            f"{'forced ' if o.forced else ''}{o.text[:110]!r}"
            for o in r.outcomes
        ]
    return "\n".join(lines)
