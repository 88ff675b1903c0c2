"""What is notable in a window, ranked: the only material narration is made of.

A finding is one statement about one (device, metric): an open threshold excursion,
a level beyond its limit, a state change with its local time ("occupied since 08:12",
"door opened 3 times, last at 09:40"), a jump ("humidity rose from 52 % to 85 %"), a
level far from its usual value, a silent or offline sensor, a low battery, a plain
level ("temperature 21.4 °C and rising"), or a level change a state change explains
("the light came on at 08:12, from 0 lx to 450 lx, when Office became occupied": an
expected change, said instead of an anomaly and of that level's plain finding). Each
finding carries exactly the numbers it may cite, as displayed, with their units and
roles; grounding checks text against them. One finding per (device, metric): the most
notable reading of it wins, so a number never has two meanings. Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Literal

from edge_agent.domain import Excursion, ExplainedChange, MetricFacts
from edge_agent.semantics import LOW_BATTERY, Meaning, Naming, Number, Role, classify, meaning
from edge_agent.wording import Wording, wording
from edge_agent.words import Vocabulary

FindingKind = Literal[
    "alarm", "excursion", "limit", "offline", "change", "jump", "stale", "battery",
    "usual", "level", "state", "counter", "explained",
]  # fmt: skip

NOTABLE = 30.0
"""Findings scoring at least this are news; a window without any is "all quiet"."""

EXPLAINED_SCORE = 69.0
"""A level change a state change explains: right after open excursions and state changes."""
_REPLACEABLE: frozenset[str] = frozenset({"jump", "level", "usual"})
"""Findings of a level that its explained change says better (the same event, once)."""

_LEVEL_SCORE = {"temperature": 22.0, "co2": 21.0, "humidity": 20.0, "illuminance": 15.0}


@dataclass(frozen=True, slots=True)
class Finding:
    """One notable (or plain) statement, in the configured language."""

    kind: FindingKind
    score: float
    device: str
    metric: str
    area: str | None
    area_name: str
    subject: str
    """What the finding is about, as written: "CO2", "Front door", "Office"."""
    words: tuple[str, ...]
    """Lower-case words that name its device or metric (questions, grounding, recall)."""
    phrase: str
    """The short note the model is shown."""
    sentence: str
    """The fallback sentence."""
    headline: str
    """The title part ("CO2 701 ppm and rising")."""
    numbers: tuple[Number, ...] = ()
    vocabulary: Vocabulary | None = None
    state: bool | None = None
    """A state finding's current value."""
    reached: tuple[bool, ...] = ()
    """States a change reached inside the window."""

    @property
    def notable(self) -> bool:
        """Whether this is news rather than a plain reading."""
        return self.score >= NOTABLE

    @property
    def fact_id(self) -> str:
        """The id of the fact it comes from."""
        return f"{self.device}.{self.metric}"


@dataclass(frozen=True, slots=True)
class FindingRules:
    """Plain values that decide what is notable."""

    limits: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    """Per metric, the normal (min, max) range (the anomaly thresholds)."""
    language: str = "en"
    tz: tzinfo | None = None
    """Time zone of the clock times written; None is the system's."""
    low_battery: float = LOW_BATTERY


@dataclass(frozen=True, slots=True)
class Findings:
    """The ranked findings of one area (or the whole home, for answers)."""

    items: tuple[Finding, ...]

    @property
    def top(self) -> Finding | None:
        """The most notable finding (the lead level when nothing is notable)."""
        return self.items[0] if self.items else None

    @property
    def notable(self) -> bool:
        """Whether anything is news."""
        return any(f.notable for f in self.items)

    @property
    def severity(self) -> Literal["info", "warning", "alert"]:
        """``alert`` while a limit is crossed or an alarm is on, ``warning`` for silent or
        offline sensors and low batteries."""
        kinds = {f.kind for f in self.items}
        if kinds & {"alarm", "excursion", "limit"}:
            return "alert"
        if kinds & {"offline", "stale", "battery"}:
            return "warning"
        return "info"


def find(
    facts: Sequence[MetricFacts],
    *,
    rules: FindingRules,
    names: Naming,
    excursions: Sequence[Excursion] = (),
    baseline: Sequence[MetricFacts] = (),
    window_s: float = 0.0,
    explained: Sequence[ExplainedChange] = (),
) -> Findings:
    """Rank what is notable in ``facts``; ``baseline``: the same series over a longer
    window, for "far from its usual value"; ``excursions``: the open ones;
    ``explained``: recent level changes a state change explained (the latest of each
    series becomes its finding, in place of a plain jump or level of the same series)."""
    w = wording(rules.language)
    usual = {f.fact_id: f for f in baseline}
    open_exc = {(e.device, e.metric): e for e in excursions if e.open}
    changes = _latest_changes(explained)
    out: list[Finding] = []
    for fact in facts:
        m = meaning(fact)
        ctx = _Ctx(fact, m, names, w, rules, window_s)
        exc = open_exc.pop((fact.device, fact.metric), None)
        found = ctx.finding(exc, usual.get(fact.fact_id))
        change = changes.pop((fact.device, fact.metric), None)
        # One finding per series: an excursion, a limit or a silent sensor says more.
        # A jump in the window that began after the change is news of its own.
        newer_jump = (
            found is not None
            and found.kind == "jump"
            and change is not None
            and (change.ts < fact.first_ts)
        )
        if change is not None and not newer_jump and (found is None or found.kind in _REPLACEABLE):
            found = ctx.explained(change) or found
        if found is not None:
            out.append(found)
    for change in changes.values():  # a series without readings left in the window
        fact = MetricFacts(
            change.device, change.metric, 1, change.value, change.value, change.value,
            change.value, change.ts, change.ts, change.unit, change.area,
        )  # fmt: skip
        said = _Ctx(fact, meaning(fact), names, w, rules, window_s).explained(change)
        if said is not None:
            out.append(said)
    for exc in open_exc.values():  # an excursion whose readings left the window
        fact = MetricFacts(
            exc.device, exc.metric, 1, exc.last, exc.last, exc.peak, exc.last,
            exc.started_at, exc.started_at, exc.unit, exc.area,
        )  # fmt: skip
        out.append(_Ctx(fact, meaning(fact), names, w, rules, window_s).excursion(exc))
    out.sort(key=lambda f: (-f.score, f.area or "", f.subject, f.metric))
    return Findings(tuple(out))


def _latest_changes(explained: Sequence[ExplainedChange]) -> dict[tuple[str, str], ExplainedChange]:
    """The latest explained change of each series. Not cut to the summary window: a change
    is decided only once its explain window has passed, often after the summary window, so
    the caller's recency (the explainer keeps them for an hour) is the one that counts."""
    out: dict[tuple[str, str], ExplainedChange] = {}
    for change in explained:
        key = (change.device, change.metric)
        if key not in out or change.ts >= out[key].ts:
            out[key] = change
    return out


class _Ctx:
    """Builds the finding of one fact."""

    def __init__(
        self,
        fact: MetricFacts,
        m: Meaning,
        names: Naming,
        w: Wording,
        rules: FindingRules,
        window_s: float,
    ) -> None:
        self.fact, self.m, self.w, self.rules, self.names = fact, m, w, rules, names
        self.window_s = window_s or max(fact.last_ts - fact.first_ts, 0.0)
        self.area_name = names.area(fact.area)
        self.device_name = names.device(fact.device, fact.area)
        label = m.label(w.language)
        self.label = label
        words = set(m.words()) | {x.lower() for x in self.device_name.split()}
        self.words = tuple(sorted(words))

    # --- numbers ---------------------------------------------------------------------

    def num(self, value: float, role: Role, unit: str | None = None) -> Number:
        unit = self.m.unit if unit is None else unit
        decimals = self.m.decimals
        shown = round(value, decimals)
        text = self.w.number(shown, decimals)
        return Number(shown, decimals, unit, role, f"{text} {unit}".strip() if unit else text)

    def clock(self, ts: float) -> Number:
        text = datetime.fromtimestamp(ts, self.rules.tz).strftime("%H:%M")
        hours, minutes = text.split(":")
        return Number(int(hours) * 60 + int(minutes), 0, "time", "time", text)

    def count(self, n: int) -> Number:
        return Number(float(n), 0, "", "count", str(n))

    def make(
        self,
        kind: FindingKind,
        score: float,
        phrase: str,
        sentence: str,
        headline: str,
        numbers: tuple[Number, ...] = (),
        subject: str | None = None,
        **state: object,
    ) -> Finding:
        f = self.fact
        return Finding(
            kind, score, f.device, f.metric, f.area, self.area_name, subject or self.label,
            self.words, phrase, sentence, headline, numbers, **state,  # type: ignore[arg-type]
        )  # fmt: skip

    # --- kinds -----------------------------------------------------------------------

    def finding(self, exc: Excursion | None, usual: MetricFacts | None) -> Finding | None:
        m, fact = self.m, self.fact
        if exc is not None:
            return self.excursion(exc)
        if fact.stale or fact.count == 0:
            return self.stale()
        if m.vocabulary is not None:
            return self.state()
        if m.kind == "diagnostic":
            if m.metric == "battery" and fact.last <= self.rules.low_battery:
                return self.battery()
            return None
        if m.kind == "counter":
            return None
        return self.level(usual)

    def excursion(self, exc: Excursion) -> Finding:
        w = self.w
        limit, peak, now = (
            self.num(exc.limit, "limit"),
            self.num(exc.peak, "peak"),
            self.num(exc.last, "now"),
        )
        since = self.clock(exc.started_at)
        phrase, sentence = w.excursion(self.label, exc.direction, limit, since, peak, now)
        head = (
            w.level_headline(self.label, self.m.metric, now)
            + f" ({w.above_below(exc.direction)} {limit.text})"
        )
        return self.make("excursion", 95.0, phrase, sentence, head, (now, limit, since, peak))

    def explained(self, change: ExplainedChange) -> Finding | None:
        """A level change and its cause: "The light came on at 08:12, from 0 lx to 450 lx,
        when Office became occupied"."""
        at, to = self.clock(change.ts), self.num(change.value, "to")
        frm = None if change.previous is None else self.num(change.previous, "from")
        if frm is not None and frm.text == to.text:
            return None  # "from 0 kg/kg to 0 kg/kg": too small to say at the shown precision
        binary = change.cause_value in (0.0, 1.0) and change.cause_previous in (None, 0.0, 1.0)
        cause = classify(change.cause_device, change.cause_metric, None, binary)
        vocab = cause.vocabulary
        state_kw: dict[str, object] = {}
        who: str | None
        state: str | None
        if change.cause_device == change.device and change.cause_metric == change.metric:
            state, who = None, None  # the series' own step: nothing else to name
        elif vocab is not None:
            reached = change.cause_value >= 0.5
            state = vocab.lang(self.w.language).current(reached)[0]
            occupancy = vocab.key == "occupancy" and change.area is not None
            who = (
                self.area_name if occupancy else self.names.device(change.cause_device, change.area)
            )
            # The cause's state words may be cited for the moment it changed (grounding).
            state_kw = {"vocabulary": vocab, "reached": (reached,)}
        else:
            state, who = None, cause.label(self.w.language)
        phrase, sentence = self.w.explained(self.label, self.m.metric, frm, to, at, who, state)
        numbers = (at, to) if frm is None else (at, frm, to)
        head = self.w.explained_headline(self.label, self.m.metric, frm, to, at)
        return self.make(
            "explained", EXPLAINED_SCORE, phrase, sentence, head, numbers, self.label, **state_kw
        )

    def stale(self) -> Finding:
        since = self.clock(self.fact.last_ts)
        phrase, sentence = self.w.stale(self.device_name, since)
        return self.make("stale", 55.0, phrase, sentence, phrase, (since,), self.device_name)

    def battery(self) -> Finding:
        value = self.num(self.fact.last, "now")
        phrase, sentence = self.w.battery(self.device_name, value)
        return self.make("battery", 50.0, phrase, sentence, phrase, (value,), self.device_name)

    def state(self) -> Finding | None:
        fact, vocab, w = self.fact, self.m.vocabulary, self.w
        assert vocab is not None
        now = fact.last >= 0.5
        words = vocab.lang(w.language)
        reached = tuple(v >= 0.5 for _, v in fact.changes)
        subject = self.area_name if vocab.key == "occupancy" and fact.area else self.device_name
        state_kw: dict[str, object] = {"vocabulary": vocab, "state": now, "reached": reached}
        current = words.current(now)[0]
        if vocab.key == "available":
            if now:
                return None
            since = self.clock(fact.changes[-1][0] if fact.changes else fact.first_ts)
            phrase, sentence = w.since(subject, current, since)
            return self.make(
                "offline", 70.0, phrase, sentence, phrase, (since,), subject, **state_kw
            )
        if vocab.key == "battery_low":
            if not now:
                return None
            phrase, sentence = w.steady(subject, current)
            return self.make("battery", 50.0, phrase, sentence, phrase, (), subject, **state_kw)
        if vocab.alarm and now:
            since = self.clock(fact.changes[-1][0] if fact.changes else fact.first_ts)
            phrase, sentence = w.since(subject, current, since)
            return self.make(
                "alarm", 100.0, phrase, sentence, phrase, (since,), subject, **state_kw
            )
        if fact.changes:
            last = self.clock(fact.changes[-1][0])
            to_open = [v >= 0.5 for _, v in fact.changes]
            # The state the sensor leaves its resting state for: open, occupied, on.
            active = vocab.key != "contact"
            events = words.event(active)
            visits = sum(1 for v in to_open if v == active)
            base = {"occupancy": 75.0, "contact": 70.0, "opening": 70.0}.get(vocab.key, 50.0)
            score = base + (5.0 if now == active else 0.0)
            if len(fact.changes) >= 2 and events and visits >= 2:
                n = self.count(visits)
                last_visit = self.clock(
                    next(t for t, v in reversed(fact.changes) if (v >= 0.5) == active)
                )
                phrase, sentence = w.visits(subject, events[0], n, last_visit, current)
                return self.make(
                    "change", score, phrase, sentence, phrase, (n, last_visit), subject, **state_kw
                )
            phrase, sentence = w.since(subject, current, last)
            return self.make(
                "change", score, phrase, sentence, phrase, (last,), subject, **state_kw
            )
        if vocab.alarm:
            score = 3.0
        elif vocab.key == "occupancy":
            score = 26.0 if now else 16.0
        elif vocab.key in ("contact", "opening", "lock"):
            is_open = now if vocab.key == "opening" else not now
            score = 35.0 if is_open else 18.0
        else:
            score = 14.0
        phrase, sentence = w.steady(subject, current)
        return self.make("state", score, phrase, sentence, phrase, (), subject, **state_kw)

    def level(self, usual: MetricFacts | None) -> Finding:
        fact, m, w = self.fact, self.m, self.w
        now = self.num(fact.last, "now")
        label, metric = self.label, m.metric
        delta = m.level.notable_delta if m.level else max(abs(fact.max - fact.min), 1e-9) * 10
        hours = self.window_s / 3600.0 if self.window_s else 0.0
        trend = 0
        if fact.slope_per_h is not None and hours and abs(fact.slope_per_h) * hours >= delta / 2:
            trend = 1 if fact.slope_per_h > 0 else -1
        low, high = self.rules.limits.get(metric, (None, None))
        if (high is not None and fact.last > high) or (low is not None and fact.last < low):
            above = high is not None and fact.last > high
            limit = self.num(high if above else low, "limit")  # type: ignore[arg-type]
            phrase, sentence = w.limit(label, now, "above" if above else "below", limit, trend)
            head = w.level_headline(label, metric, now, trend)
            return self.make("limit", 90.0, phrase, sentence, head, (now, limit))
        span = fact.max - fact.min
        if span >= delta and fact.count >= 3:
            rising = fact.slope_per_h is not None and fact.slope_per_h > 0
            end, start = (fact.max, fact.min) if rising else (fact.min, fact.max)
            # Only when the last reading sits at the far end: then "from A to B" is true.
            if abs(fact.last - end) <= 0.25 * span:
                frm = self.num(start, "from")
                phrase, sentence = w.jump(label, rising, frm, now)
                score = 60.0 + min(20.0, 10.0 * span / delta)
                head = w.level_headline(label, metric, now, 1 if rising else -1)
                return self.make("jump", score, phrase, sentence, head, (frm, now))
        if (
            usual is not None
            and usual.count > fact.count
            and abs(fact.last - usual.mean) >= 2 * delta
        ):
            # The usual value is a mean, not a reading: it is said, not cited.
            above = fact.last > usual.mean
            phrase, sentence = w.usual(label, now, above, trend)
            head = w.level_headline(label, metric, now, trend)
            return self.make("usual", 45.0, phrase, sentence, head, (now,))
        score = _LEVEL_SCORE.get(metric, 12.0) + (10.0 if trend else 0.0)
        phrase, sentence = w.level(label, now, trend)
        head = w.level_headline(label, metric, now, trend)
        return self.make("level", score, phrase, sentence, head, (now,))
