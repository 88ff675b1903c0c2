"""Reading times: a payload's own time where it carries one, and the late-reading rule.

A reading is filed at its own time when the payload says when it was taken
(zigbee2mqtt ``last_seen``, Tasmota ``Time``, a generic subscription's ``time_path``),
otherwise at its receive time. :class:`TimePolicy` then bounds that time against the
receive time:

- more than ``max_skew_s`` in the future: the device clock is wrong, the receive time
  is used instead;
- older than ``max_age_s`` (what the windows keep): the message is dead-lettered as
  ``stale_timestamp``, it could not enter any window;
- older than ``late_after_s``, or delivered retained (its time is unknown and may be
  hours old): the reading is marked ``late``. Late readings go into the window at their
  own time but do not feed jump or z-score anomalies, so a backlog delivered in a burst
  after an outage neither fakes a trend nor raises anomalies about the past.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edge_agent.domain import SensorEvent
from edge_agent.errors import PayloadError

CLOCK_NOT_SET_BEFORE = 1_000_000_000.0
"""Epoch seconds (2001-09-09): earlier payload times come from a device whose clock was
never set (Tasmota without NTP says 1970), so they are not used."""

_EPOCH_MS_ABOVE = 1e11
"""Epoch numbers above this are milliseconds (1e11 s is the year 5138)."""


def payload_time(value: Any) -> float | None:
    """Epoch seconds from an ISO 8601 string or an epoch number (s or ms); else None.

    An ISO time without an offset (Tasmota's ``Time``) is the local time of this host.
    A time before :data:`CLOCK_NOT_SET_BEFORE`, or one that does not parse, is None: the
    reading then keeps its receive time.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        if seconds > _EPOCH_MS_ABOVE:
            seconds /= 1000.0
    elif isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            seconds = datetime.fromisoformat(value).timestamp()
        except (ValueError, OverflowError, OSError):
            return None
    else:
        return None
    return seconds if seconds >= CLOCK_NOT_SET_BEFORE else None


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """Bounds a reading's time against its receive time and marks late readings."""

    late_after_s: float = 30.0
    """A reading older than this when received is late."""
    max_skew_s: float = 60.0
    """A payload time further ahead than this is distrusted (receive time is used)."""
    max_age_s: float = 3600.0
    """A reading older than this is ``stale_timestamp`` (the windows keep no older)."""

    def apply(
        self, events: list[SensorEvent], now: float, *, retained: bool = False
    ) -> list[SensorEvent]:
        """``events`` with bounded times and ``late`` set; raises ``stale_timestamp``."""
        out = events
        for i, event in enumerate(events):
            ts = event.ts
            if ts == now and not retained:
                continue  # the common case: no payload time, received live
            if ts > now + self.max_skew_s:
                ts = now
            if ts < now - self.max_age_s:
                raise PayloadError(
                    "stale_timestamp",
                    f"{event.device} {event.metric} was read {now - ts:.0f} s ago, "
                    f"longer than the {self.max_age_s:.0f} s the windows keep",
                )
            late = retained or ts < now - self.late_after_s
            if ts != event.ts or late != event.late:
                if out is events:
                    out = list(events)
                out[i] = replace(event, ts=ts, late=late)
        return out
