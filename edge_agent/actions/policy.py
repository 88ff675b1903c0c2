"""The action policy: code decides. Every proposal is re-validated, whatever wrote it.

Checks, in order: JSON and shape, allowlist and mode, device (allowed for the action and
present in the current facts), parameters (type and range), reason length, then the
context: quiet hours, pending duplicates, cooldown and hourly rate. A rejection carries
a machine-readable :class:`~edge_agent.actions.types.Code`. Pure code.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_agent.actions.types import NO_ACTION, Code, ParamValue, Verdict
from edge_agent.domain import MetricFacts
from edge_agent.settings import ActionSpec, Condition, EnumParam, IntParam, QuietHours

HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A proposal that passed the shape checks: typed, in range, allowlisted."""

    action: str
    device: str
    params: dict[str, ParamValue]
    reason: str


class History:
    """When each action ran, on which device: the memory behind cooldowns and rates."""

    def __init__(self) -> None:
        self._runs: dict[str, deque[tuple[float, str]]] = {}

    def record(self, action: str, device: str, ts: float) -> None:
        """Remember one run (older than an hour is forgotten lazily)."""
        self._runs.setdefault(action, deque()).append((ts, device))

    def last_run(self, action: str, device: str) -> float | None:
        """Time of the latest run of ``action`` on ``device``."""
        times = [ts for ts, dev in self._runs.get(action, ()) if dev == device]
        return max(times) if times else None

    def runs_since(self, action: str, since: float) -> int:
        """Runs of ``action`` (any device) after ``since``."""
        runs = self._runs.get(action)
        if runs is None:
            return 0
        while runs and runs[0][0] < since - HOUR_S:  # keep an hour of slack for cooldowns
            runs.popleft()
        return sum(1 for ts, _ in runs if ts > since)


def parse_output(text: str) -> tuple[object, Verdict]:
    """The model's text as JSON, or an ``invalid_json`` verdict."""
    try:
        return json.loads(text), Verdict()
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, Verdict(Code.INVALID_JSON, f"not JSON: {exc}"[:200])


def condition_holds(cond: Condition, facts: Iterable[MetricFacts]) -> str | None:
    """The reading that makes ``cond`` hold (as text for the audit), or None.

    Only fresh readings count: a stale sensor's last value is not today's reason.
    """
    for f in facts:
        if f.metric != cond.metric or f.stale or f.count == 0:
            continue
        if cond.devices and f.device not in cond.devices:
            continue
        if cond.area is not None and f.area != cond.area:
            continue
        if cond.above is not None and f.last > cond.above:
            return f"{f.device} {f.metric} {f.last:g} > {cond.above:g}"
        if cond.below is not None and f.last < cond.below:
            return f"{f.device} {f.metric} {f.last:g} < {cond.below:g}"
    return None


def auto_hold(spec: ActionSpec, facts: Sequence[MetricFacts], *, forced: bool) -> tuple[str, str]:
    """(why an ``auto`` action must wait for approval, or ""; the reading that allows it).

    ``forced``: the grammar overrode the model's choice of action, device or value.
    """
    if spec.when is None:
        return "auto held for approval: the action has no 'when' condition", ""
    met = condition_holds(spec.when, facts)
    if met is None:
        return "auto held for approval: its 'when' condition does not hold", ""
    if forced:
        return "auto held for approval: the grammar overrode the model's choice", ""
    return "", met


def in_quiet_hours(quiet: QuietHours | None, now: float) -> bool:
    """True when ``now`` falls in the daily quiet span (which may cross midnight)."""
    if quiet is None:
        return False
    try:
        tz = ZoneInfo(quiet.timezone) if quiet.timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        return True  # settings validate the zone; if it vanished, fail towards quiet
    local = datetime.fromtimestamp(now, tz).time()
    start, end = time.fromisoformat(quiet.start), time.fromisoformat(quiet.end)
    if start <= end:
        return start <= local < end
    return local >= start or local < end


class Policy:
    """The allowlist plus the rules that decide whether a proposal may run."""

    def __init__(
        self,
        specs: Sequence[ActionSpec],
        *,
        reason_max: int = 120,
        quiet_hours: QuietHours | None = None,
    ) -> None:
        self.specs = {s.id: s for s in specs}
        self._reason_max = reason_max
        self._quiet = quiet_hours

    def shape(self, doc: object) -> tuple[Candidate | None, Verdict]:
        """Schema, allowlist, device allowed for the action, parameter types and ranges."""
        if not isinstance(doc, dict):
            return None, Verdict(Code.SCHEMA, "expected a JSON object")
        action, reason = doc.get("action"), doc.get("reason", "")
        if not isinstance(action, str):
            return None, Verdict(Code.SCHEMA, "'action' must be a string")
        if not isinstance(reason, str):
            return None, Verdict(Code.SCHEMA, "'reason' must be a string")
        reason = reason.strip()
        if len(reason) > self._reason_max:
            return None, Verdict(Code.REASON_TOO_LONG, f"reason over {self._reason_max} chars")
        if action == NO_ACTION:
            extra = set(doc) - {"action", "reason"}
            if extra:
                return None, Verdict(Code.SCHEMA, f"unexpected keys {sorted(extra)}")
            return Candidate(NO_ACTION, "", {}, reason), Verdict()
        if set(doc) != {"action", "device", "params", "reason"}:
            return None, Verdict(Code.SCHEMA, "expected keys action, device, params, reason")
        spec = self.specs.get(action)
        if spec is None:
            return None, Verdict(Code.UNKNOWN_ACTION, f"{action[:60]!r} is not allowlisted")
        if spec.mode == "off":
            return None, Verdict(Code.ACTION_OFF, f"{action} is switched off")
        device, params = doc["device"], doc["params"]
        if not isinstance(device, str) or device not in spec.devices:
            return None, Verdict(Code.DEVICE_NOT_ALLOWED, f"{action} may not target {device!r}")
        if not isinstance(params, dict):
            return None, Verdict(Code.SCHEMA, "'params' must be an object")
        checked, verdict = self._params(spec, params)
        if not verdict.ok:
            return None, verdict
        return Candidate(action, device, checked, reason), Verdict()

    def _params(
        self, spec: ActionSpec, params: dict[str, object]
    ) -> tuple[dict[str, ParamValue], Verdict]:
        missing = [n for n in spec.params if n not in params]
        if missing:
            return {}, Verdict(Code.PARAM_MISSING, f"missing {', '.join(missing)}")
        extra = [n for n in params if n not in spec.params]
        if extra:
            return {}, Verdict(Code.PARAM_UNEXPECTED, f"unexpected {', '.join(extra)[:100]}")
        out: dict[str, ParamValue] = {}
        for name, param in spec.params.items():
            value = params[name]
            if isinstance(param, EnumParam):
                if not isinstance(value, str):
                    return {}, Verdict(Code.PARAM_TYPE, f"{name} must be a string")
                if value not in param.values:
                    return {}, Verdict(Code.PARAM_RANGE, f"{name}={value[:40]!r} not allowed")
                out[name] = value
                continue
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if not is_number or (isinstance(param, IntParam) and not isinstance(value, int)):
                kind = "an integer" if isinstance(param, IntParam) else "a number"
                return {}, Verdict(Code.PARAM_TYPE, f"{name} must be {kind}")
            assert isinstance(value, int | float)
            if not math.isfinite(value) or not param.min <= value <= param.max:
                return {}, Verdict(
                    Code.PARAM_RANGE, f"{name}={value} outside [{param.min}, {param.max}]"
                )
            out[name] = value if isinstance(param, IntParam) else round(float(value), 3)
        return out, Verdict()

    def context(
        self,
        cand: Candidate,
        *,
        devices: Collection[str],
        history: History,
        now: float,
        pending: Iterable[tuple[str, str]] = (),
    ) -> Verdict:
        """Device present in the facts, quiet hours, pending duplicate, cooldown, rate."""
        spec = self.specs[cand.action]
        if cand.device not in devices:
            return Verdict(Code.UNKNOWN_DEVICE, f"{cand.device!r} is not in the current facts")
        if in_quiet_hours(self._quiet, now):
            return Verdict(Code.QUIET_HOURS, "inside quiet hours")
        if (cand.action, cand.device) in set(pending):
            return Verdict(Code.DUPLICATE_PENDING, "the same action awaits approval")
        last = history.last_run(cand.action, cand.device)
        if last is not None and now - last < spec.cooldown_s:
            return Verdict(Code.COOLDOWN, f"ran {now - last:.0f}s ago; cooldown {spec.cooldown_s}s")
        if history.runs_since(cand.action, now - HOUR_S) >= spec.max_per_hour:
            return Verdict(Code.RATE_LIMIT, f"already {spec.max_per_hour} runs this hour")
        return Verdict()

    def validate(
        self,
        doc: object,
        *,
        devices: Collection[str],
        history: History,
        now: float,
        pending: Iterable[tuple[str, str]] = (),
    ) -> tuple[Candidate | None, Verdict]:
        """Every check; ``action: none`` passes the shape and skips the context."""
        cand, verdict = self.shape(doc)
        if cand is None or cand.action == NO_ACTION:
            return cand, verdict
        return cand, self.context(cand, devices=devices, history=history, now=now, pending=pending)
