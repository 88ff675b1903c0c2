"""Rolling windows per device and metric, and the deterministic facts computed from them."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from edge_agent.domain import MetricFacts, SensorEvent


class WindowStore:
    """Keeps the last ``window_s`` seconds of readings for every (device, metric)."""

    def __init__(self, window_s: float, max_points_per_series: int = 10_000) -> None:
        self._window_s = window_s
        self._max_points = max_points_per_series
        self._series: dict[tuple[str, str], deque[SensorEvent]] = {}

    def add(self, event: SensorEvent) -> None:
        """Append one reading; the deque's maxlen bounds memory for chatty sensors."""
        key = (event.device, event.metric)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = deque(maxlen=self._max_points)
        series.append(event)

    def add_all(self, events: Iterable[SensorEvent]) -> None:
        """Append several readings."""
        for event in events:
            self.add(event)

    def facts(self, now: float) -> tuple[MetricFacts, ...]:
        """Facts over ``[now - window_s, now]``, sorted by device then metric.

        Readings older than the window are evicted here, so memory stays bounded by
        time as well as by count.
        """
        start = now - self._window_s
        out = []
        for key in sorted(self._series):
            series = self._series[key]
            while series and series[0].ts < start:
                series.popleft()
            if not series:
                del self._series[key]
                continue
            out.append(_summarise(series))
        return tuple(out)


def _summarise(series: deque[SensorEvent]) -> MetricFacts:
    values = [e.value for e in series]
    last = series[-1]
    return MetricFacts(
        device=last.device,
        metric=last.metric,
        count=len(values),
        last=last.value,
        min=min(values),
        max=max(values),
        mean=sum(values) / len(values),
        first_ts=series[0].ts,
        last_ts=last.ts,
        unit=last.unit,
        area=last.area,
    )
