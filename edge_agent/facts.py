"""Rolling windows per device and metric, and the deterministic facts computed from them.

The store is bounded: at most ``max_series`` series and ``max_devices`` devices (a new
one past a cap is refused and counted), series are indexed by area so one area's facts
cost that area's series only, and series with nothing left in the retention are pruned
a few at a time, oldest first, from an order kept by last reading.

Series are also indexed by device and by the words of their device, metric and area ids,
so an ask picks the series it is about at a cost bounded by what it takes, never by all
series (see :mod:`edge_agent.scope`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import islice
from operator import mul
from statistics import median

from edge_agent.domain import MetricFacts, SensorEvent

BASELINE_S = 3600.0
"""Default seconds of readings kept per series for baselines; the settings use it too."""
STALE_MIN_S = 60.0
"""Default shortest silence that can make a sensor stale; the settings use it too."""

_GAP_SAMPLES = 15
"""Recent gaps kept per series for its usual interval; odd, so the median is a real gap."""

_MIN_RESUM = 64
"""Running sums are recomputed after this many evictions at the least (see _Series)."""

_PRUNE_EVERY = 1024
"""Readings added between two prunes when nothing asks for facts (bounds memory alone)."""

_SCAN_FACTOR = 8
"""A word's newest series are looked for among this many times as many newest series."""

_ID_SPLIT = re.compile(r"[\W_]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

Key = tuple[str, str]
"""(device, metric): one series."""


def id_words(ident: str) -> tuple[str, ...]:
    """The lower-case words of an id: ``sensor.living_room_CO2`` -> sensor, living, room,
    co2; ``HumidityRatio`` -> humidity, ratio. What a question's words are matched on."""
    return tuple(dict.fromkeys(w for w in _ID_SPLIT.split(_CAMEL.sub(" ", ident).lower()) if w))


@dataclass(frozen=True, slots=True)
class Baseline:
    """Window statistics of one series, excluding the reading being checked."""

    count: int
    mean: float
    std: float
    """Sample standard deviation; 0 under two readings."""
    previous: float | None
    previous_ts: float | None
    binary: bool
    """Every reading so far was 0 or 1 with no unit (contact, occupancy, ON/OFF)."""


@dataclass(frozen=True, slots=True)
class Silence:
    """A series that stopped reporting: no reading for ``limit_s`` or longer."""

    device: str
    metric: str
    unit: str | None
    area: str | None
    last_value: float
    last_ts: float
    interval_s: float
    limit_s: float


class _Series:
    """Readings of one (device, metric), with running sums for O(1) mean and variance.

    The sums are of ``value - ref`` so that large offsets (CO2 ~ 1000 ppm, epoch times)
    do not eat the precision of the variance. Adding and subtracting floats drifts, so
    the sums are rebuilt from the window once as many readings left as it holds: O(1)
    amortised per reading.
    """

    __slots__ = (
        "area",
        "binary",
        "changes",
        "device",
        "evicted",
        "gaps",
        "last_event",
        "last_ts",
        "last_value",
        "metric",
        "prev_ts",
        "prev_value",
        "ref",
        "s1",
        "s2",
        "ts",
        "unit",
        "values",
        "words",
    )

    def __init__(self, event: SensorEvent, max_changes: int) -> None:
        self.device = event.device
        self.metric = event.metric
        self.unit = event.unit
        self.area = event.area
        self.ts: deque[float] = deque()
        self.values: deque[float] = deque()
        self.ref = event.value
        self.s1 = 0.0
        self.s2 = 0.0
        self.evicted = 0
        self.gaps: deque[float] = deque(maxlen=_GAP_SAMPLES)
        self.changes: deque[tuple[float, float]] = deque(maxlen=max_changes)
        self.binary = True
        self.last_event: SensorEvent | None = None
        self.last_value = event.value
        self.last_ts = event.ts
        self.prev_value: float | None = None
        self.prev_ts: float | None = None
        self.words: tuple[str, ...] = ()
        """The index words it is filed under (device, metric and area ids)."""

    def add(self, event: SensorEvent, horizon_s: float, max_points: int) -> bool:
        """File one reading; True if it is now the newest (the series' order key moved)."""
        value = event.value
        ts = event.ts
        if self.last_event is not None and event.late and ts < self.last_ts:
            self._insert(event, horizon_s, max_points)
            return False
        if self.last_event is not None:
            gap = ts - self.last_ts
            if gap > 0:
                self.gaps.append(gap)
            else:
                # Receive times can step back when the clock is adjusted; keep the window
                # sorted (bisect relies on it) by filing the reading at the previous time.
                ts = self.last_ts
            if self.binary and value != self.last_value:
                self.changes.append((ts, value))
            self.prev_value = self.last_value
            self.prev_ts = self.last_ts
        if self.binary and ((value != 0.0 and value != 1.0) or event.unit is not None):
            self.binary = False
            self.changes.clear()
        self.last_event = event
        self.last_value = value
        self.last_ts = ts
        self.unit = event.unit
        self.area = event.area
        self.ts.append(ts)
        self.values.append(value)
        d = value - self.ref
        self.s1 += d
        self.s2 += d * d
        if len(self.values) > max_points:
            self._pop()
        self.evict(ts - horizon_s)
        return True

    def _insert(self, event: SensorEvent, horizon_s: float, max_points: int) -> None:
        """A late reading older than the newest: filed at its own time, in order.

        It changes no "last" or "previous" reading, gap or transition: those describe
        the live stream. It still counts for min/max/mean/trend over its window.
        """
        ts, value = event.ts, event.value
        if ts < self.last_ts - horizon_s:
            return  # already outside what the window keeps
        if self.binary and ((value != 0.0 and value != 1.0) or event.unit is not None):
            self.binary = False
            self.changes.clear()
        i = bisect_right(self.ts, ts)
        self.ts.insert(i, ts)
        self.values.insert(i, value)
        d = value - self.ref
        self.s1 += d
        self.s2 += d * d
        if len(self.values) > max_points:
            self._pop()

    def evict(self, start: float) -> None:
        ts = self.ts
        while ts and ts[0] < start:
            self._pop()

    def _pop(self) -> None:
        self.ts.popleft()
        d = self.values.popleft() - self.ref
        self.s1 -= d
        self.s2 -= d * d
        self.evicted += 1
        if self.evicted >= max(len(self.values), _MIN_RESUM):
            self._resum()

    def _resum(self) -> None:
        self.evicted = 0
        if self.values:
            self.ref = self.values[-1]
        ref = self.ref
        self.s1 = sum(v - ref for v in self.values)
        self.s2 = sum((v - ref) ** 2 for v in self.values)

    def baseline(self, event: SensorEvent) -> Baseline:
        n, s1, s2 = len(self.values), self.s1, self.s2
        previous: float | None = self.last_value
        previous_ts: float | None = self.last_ts
        if self.last_event is event:  # already added: take it back out of the sums
            d = event.value - self.ref
            n, s1, s2 = n - 1, s1 - d, s2 - d * d
            previous, previous_ts = self.prev_value, self.prev_ts
        elif self.last_event is None:
            previous = previous_ts = None
        if n <= 0:
            return Baseline(0, math.nan, 0.0, previous, previous_ts, self.binary)
        mean_d = s1 / n
        var = (s2 - s1 * mean_d) / (n - 1) if n > 1 else 0.0
        std = math.sqrt(var) if var > 0 else 0.0
        return Baseline(n, self.ref + mean_d, std, previous, previous_ts, self.binary)

    def interval(self, min_gaps: int) -> float | None:
        return median(self.gaps) if len(self.gaps) >= min_gaps else None


class WindowStore:
    """Keeps readings per (device, metric) and computes facts over a rolling window.

    ``window_s`` is the window facts describe; ``baseline_s`` (at least ``window_s``) is
    how long readings are kept for anomaly baselines. A series whose usual interval is
    known is remembered for ``forget_after_s`` after its last reading so that a silent
    sensor is still reported stale once its readings have left the window; one without
    (fewer than ``stale_min_gaps`` gaps: a one-off name) is pruned once nothing of it is
    left in the baseline. Past ``max_series`` series or ``max_devices`` devices a new
    series is refused (:meth:`add` returns False, ``refused_total`` counts it).
    """

    def __init__(
        self,
        window_s: float,
        max_points_per_series: int = 10_000,
        *,
        baseline_s: float | None = BASELINE_S,
        stale_factor: float = 3.0,
        stale_min_s: float = STALE_MIN_S,
        stale_min_gaps: int = 3,
        forget_after_s: float = 86_400.0,
        max_changes: int = 20,
        max_series: int = 5000,
        max_devices: int = 1000,
    ) -> None:
        self._window_s = window_s
        self._horizon_s = max(window_s, baseline_s or 0.0)
        self._max_points = max_points_per_series
        self._stale_factor = stale_factor
        self._stale_min_s = stale_min_s
        self._stale_min_gaps = stale_min_gaps
        self._forget_after_s = max(forget_after_s, self._horizon_s)
        self._max_changes = max_changes
        self._max_series = max_series
        self._max_devices = max_devices
        # Insertion order is the order of last readings: a series moves to the end when
        # it gets a newer one, so pruning reads from the front and stops at the first
        # series that is still current.
        self._series: dict[Key, _Series] = {}
        self._areas: dict[str | None, dict[Key, _Series]] = {}
        self._devices: dict[str, dict[Key, _Series]] = {}
        """Series per device, for the device cap, asks and the names grounding checks."""
        self._words: dict[str, dict[Key, _Series]] = {}
        """Series per id word, in the order they appeared."""
        self.names_version = 0
        """Bumped whenever a device or area appears or leaves (caches of names key on it)."""
        self._latest = -math.inf
        self._adds = 0
        self.refused_total = 0
        """New series refused because a cap was reached."""
        self.pruned_total = 0
        """Series forgotten for silence."""
        self.names: NameView = NameView(self._devices, self._areas, self)
        """Every device and area in the store, live (for the grounding check)."""

    @property
    def horizon_s(self) -> float:
        """How far back readings are kept (the baseline, at least the window)."""
        return self._horizon_s

    @property
    def series_count(self) -> int:
        """Series in the store."""
        return len(self._series)

    def add(self, event: SensorEvent) -> bool:
        """Append one reading; old ones leave by time and by ``max_points_per_series``.

        False if the reading starts a new series past ``max_series`` or ``max_devices``:
        it is refused, not stored.
        """
        key = (event.device, event.metric)
        if event.ts > self._latest:
            self._latest = event.ts
        self._adds += 1
        if self._adds % _PRUNE_EVERY == 0:
            self._prune(self._latest)
        series = self._series.get(key)
        if series is None:
            if not self._has_room(event.device):
                self._prune(self._latest)
                if not self._has_room(event.device):
                    self.refused_total += 1
                    return False
            series = self._series[key] = _Series(event, self._max_changes)
            self._devices.setdefault(event.device, {})[key] = series
            self._file(key, series, event.area)
        elif series.area != event.area:
            self._unfile(key, series)
            self._file(key, series, event.area)
        if series.add(event, self._horizon_s, self._max_points):
            # Newest reading: move to the end of the prune order (O(1) amortised).
            del self._series[key]
            self._series[key] = series
        return True

    def _file(self, key: Key, series: _Series, area: str | None) -> None:
        """File a series under its area and its id words."""
        if area not in self._areas:
            self.names_version += 1
        self._areas.setdefault(area, {})[key] = series
        device, metric = key
        series.words = tuple(
            dict.fromkeys((*id_words(device), *id_words(metric), *id_words(area or "")))
        )
        for word in series.words:
            self._words.setdefault(word, {})[key] = series
        self.names_version += 1

    def _has_room(self, device: str) -> bool:
        if len(self._series) >= self._max_series:
            return False
        return device in self._devices or len(self._devices) < self._max_devices

    def add_all(self, events: Iterable[SensorEvent]) -> None:
        """Append several readings."""
        for event in events:
            self.add(event)

    def baseline(self, event: SensorEvent) -> Baseline | None:
        """Statistics of the event's series without the event itself; None if unseen.

        O(1). Works whether or not ``event`` was already added, so the anomaly check
        may run before or after :meth:`add`.
        """
        series = self._series.get((event.device, event.metric))
        return None if series is None else series.baseline(event)

    def facts(self, now: float, window_s: float | None = None) -> tuple[MetricFacts, ...]:
        """Facts over ``[now - window_s, now]``, sorted by device then metric.

        ``window_s`` defaults to the store's window and is capped at the baseline. Series
        without readings in the window are left out unless they are stale, in which case
        they appear with ``count=0`` and their last reading as last/min/max/mean.
        """
        self._prune(now)
        return self._facts_of(self._series, now, window_s)

    def area_facts(
        self, area: str | None, now: float, window_s: float | None = None
    ) -> tuple[MetricFacts, ...]:
        """:meth:`facts` of one area only; costs that area's series, not all of them."""
        self._prune(now)
        return self._facts_of(self._areas.get(area, {}), now, window_s)

    def facts_of(
        self, keys: Iterable[Key], now: float, window_s: float | None = None
    ) -> tuple[MetricFacts, ...]:
        """:meth:`facts` of the series ``keys`` only (unknown keys are skipped); costs
        those series, not all of them."""
        self._prune(now)
        series = self._series
        return self._facts_of({k: series[k] for k in keys if k in series}, now, window_s)

    @property
    def areas(self) -> tuple[str | None, ...]:
        """The areas with series, sorted by name and ``None`` (no area) last (they come
        from the configuration: far fewer than series)."""
        return tuple(sorted(self._areas, key=lambda a: (a is None, a or "")))

    def newest(self, limit: int) -> Iterator[Key]:
        """Up to ``limit`` series, newest reading first; costs ``limit``, not all series."""
        return islice(reversed(self._series), limit)

    def with_word(self, word: str, limit: int) -> list[Key]:
        """Up to ``limit`` series whose device, metric or area id has ``word`` (lower
        case): all of them when they are that few, else the newest readings first.

        The newest are found by walking the store's order of last readings, at most
        ``_SCAN_FACTOR * limit`` series; a word too rare to fill ``limit`` in that walk
        takes the rest by creation, newest first. Bounded either way: no reading pays
        for keeping each word's series in order.
        """
        bucket = self._words.get(word)
        if not bucket:
            return []
        if len(bucket) <= limit:
            return list(bucket)
        out = [k for k in islice(reversed(self._series), _SCAN_FACTOR * limit) if k in bucket]
        out = out[:limit]
        if len(out) < limit:
            taken = set(out)
            rest = (k for k in reversed(bucket) if k not in taken)
            out.extend(islice(rest, limit - len(out)))
        return out

    def word_count(self, word: str) -> int:
        """How many series have ``word`` in their ids (rare words are the specific ones)."""
        return len(self._words.get(word, ()))

    def of_device(self, device: str, limit: int) -> Iterator[Key]:
        """Up to ``limit`` series of ``device``."""
        return islice(self._devices.get(device, {}), limit)

    def in_area(self, area: str | None, limit: int) -> Iterator[Key]:
        """Up to ``limit`` series of ``area``."""
        return islice(self._areas.get(area, {}), limit)

    def facts_by_area(
        self, now: float, window_s: float | None = None
    ) -> dict[str | None, tuple[MetricFacts, ...]]:
        """:meth:`facts` grouped by area, areas sorted by name and ``None`` (no area) last."""
        self._prune(now)
        out = {}
        for area in self.areas:
            facts = self._facts_of(self._areas[area], now, window_s)
            if facts:
                out[area] = facts
        return out

    def _facts_of(
        self, series: dict[Key, _Series], now: float, window_s: float | None
    ) -> tuple[MetricFacts, ...]:
        start = now - min(window_s or self._window_s, self._horizon_s)
        horizon = now - self._horizon_s
        out = []
        for key in sorted(series):
            one = series[key]
            one.evict(horizon)
            fact = self._summarise(one, start, now)
            if fact is not None:
                out.append(fact)
        return tuple(out)

    def silent(self, now: float) -> tuple[Silence, ...]:
        """Series with no reading for ``stale_factor`` x their usual interval, sorted.

        Cheaper than :meth:`facts` (no window maths), for frequent stale checks.
        """
        self._prune(now)
        out = []
        for key in sorted(self._series):
            series = self._series[key]
            interval = series.interval(self._stale_min_gaps)
            limit = self._stale_limit(interval)
            if interval is not None and limit is not None and now - series.last_ts > limit:
                out.append(
                    Silence(
                        series.device,
                        series.metric,
                        series.unit,
                        series.area,
                        series.last_value,
                        series.last_ts,
                        interval,
                        limit,
                    )
                )
        return tuple(out)

    def _prune(self, now: float) -> None:
        """Forget series with nothing left in the baseline and no rhythm to be stale by,
        and any series silent for ``forget_after_s``.

        Reads the prune order from the front and stops at the first series with a
        reading in the baseline, so it costs the series it removes plus the silent
        sensors still kept for stale reports.
        """
        horizon = now - self._horizon_s
        forget = now - self._forget_after_s
        doomed = []
        for key, series in self._series.items():
            if series.last_ts >= horizon:
                break
            if series.last_ts < forget or series.interval(self._stale_min_gaps) is None:
                doomed.append(key)
        for key in doomed:
            series = self._series.pop(key)
            self._unfile(key, series)
            kept = self._devices[series.device]
            del kept[key]
            if not kept:
                del self._devices[series.device]
        self.pruned_total += len(doomed)

    def _unfile(self, key: Key, series: _Series) -> None:
        bucket = self._areas[series.area]
        del bucket[key]
        if not bucket:
            del self._areas[series.area]
        for word in series.words:
            filed = self._words[word]
            del filed[key]
            if not filed:
                del self._words[word]
        series.words = ()
        self.names_version += 1

    def _stale_limit(self, interval: float | None) -> float | None:
        if interval is None:
            return None  # one or two gaps say nothing about a sensor's rhythm
        return max(self._stale_factor * interval, self._stale_min_s)

    def _summarise(self, series: _Series, start: float, now: float) -> MetricFacts | None:
        interval = series.interval(self._stale_min_gaps)
        limit = self._stale_limit(interval)
        stale = limit is not None and now - series.last_ts > limit
        all_ts = list(series.ts)
        i = bisect_left(all_ts, start)
        if i == len(all_ts):
            if not stale:
                return None
            last = series.last_value
            return MetricFacts(
                series.device,
                series.metric,
                0,
                last,
                last,
                last,
                last,
                series.last_ts,
                series.last_ts,
                series.unit,
                series.area,
                stale=True,
                interval_s=interval,
            )
        ts = all_ts[i:]
        values = list(series.values)[i:]
        n = len(values)
        total = sum(values)
        return MetricFacts(
            series.device,
            series.metric,
            n,
            values[-1],
            min(values),
            max(values),
            total / n,
            ts[0],
            ts[-1],
            series.unit,
            series.area,
            slope_per_h=_slope_per_h(ts, values),
            rate_per_min=_rate_per_min(series, ts, values),
            changes=tuple(c for c in series.changes if c[0] >= start) if series.binary else (),
            stale=stale,
            interval_s=interval,
        )


class NameView(AbstractSet[str]):
    """A live, read-only view of the store's device and area names."""

    def __init__(
        self,
        devices: dict[str, dict[Key, _Series]],
        areas: dict[str | None, dict[Key, _Series]],
        store: WindowStore,
    ) -> None:
        self._devices = devices
        self._areas = areas
        self._store = store

    @property
    def version(self) -> int:
        """Changes whenever a name appears or leaves: what a cache of names keys on."""
        return self._store.names_version

    def __contains__(self, name: object) -> bool:
        return name in self._devices or (name is not None and name in self._areas)

    def __iter__(self) -> Iterator[str]:
        yield from self._devices
        for area in self._areas:
            if area is not None and area not in self._devices:
                yield area

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _slope_per_h(ts: list[float], values: list[float]) -> float | None:
    """Least-squares slope in unit/hour; None under two readings or zero time span."""
    n = len(ts)
    if n < 2:
        return None
    # Centre the times: epoch seconds squared would lose the precision we need.
    t_mean = sum(ts) / n
    dt = [t - t_mean for t in ts]
    sxx: float = sum(map(mul, dt, dt))
    if sxx <= 0:
        return None
    # sum(dt) == 0, so sum(dt * (v - v_mean)) == sum(dt * v).
    sxy: float = sum(map(mul, dt, values))
    return sxy / sxx * 3600.0


def _rate_per_min(series: _Series, ts: list[float], values: list[float]) -> float | None:
    """Change from the previous reading to the last, per minute between them."""
    if len(values) >= 2:
        prev, prev_ts = values[-2], ts[-2]
    elif series.prev_value is not None and series.prev_ts is not None:
        prev, prev_ts = series.prev_value, series.prev_ts
    else:
        return None
    elapsed = ts[-1] - prev_ts
    return (values[-1] - prev) / elapsed * 60.0 if elapsed > 0 else None
