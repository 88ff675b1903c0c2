"""A documented, seeded simulation of one day in a small home, as zigbee2mqtt messages.

The product ships no recorded data: the demo's sample day is generated here.

The home has three areas, each with a zigbee2mqtt climate sensor
(``<area>/climate``: temperature °C, humidity %, and CO2 ppm in the living room)
reporting every ``period_s`` simulated seconds, plus a living-room window contact.

- **Temperature** follows a day curve: 19 °C at night, heating to 21.5 °C from 06:30
  and 17:00, with 0.1 °C sensor noise. Between 14:00 and 14:40 the living-room window
  is open (``contact: false``) and the room cools towards 15 °C.
- **Humidity** drifts between 40 and 55 %, with a shower peak in the bathroom at 07:00.
- **CO2** rises by ~5 ppm per person-minute while people are home (07:00-08:30 and
  18:00-23:00, two people) and is ventilated towards 420 ppm outdoors at 3 % a minute; a party at
  20:00-21:00 pushes it past 1,400 ppm, a deliberate anomaly.
Everything is a pure function of the seed, so the day is the same on every machine.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

DAY_S = 24 * 3600
AREAS = ("living_room", "bedroom", "bathroom")
DEVICE_AREAS = {
    **{f"{area}/climate": area for area in AREAS},
    "living_room/window": "living_room",
    "living_room_fan": "living_room",
}
FAN = "living_room_fan"
"""A ventilation fan plug: the demo's allowlisted action targets it (it reports power)."""
"""Area of each simulated device, by its zigbee2mqtt friendly name (the topic's rest)."""


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message of the simulated day: simulated second of day, topic, JSON payload."""

    t: float
    topic: str
    payload: bytes


def _heating_target(hour: float) -> float:
    return 21.5 if (6.5 <= hour < 9) or (17 <= hour < 23) else 19.0


def _people(hour: float) -> int:
    if 20 <= hour < 21:
        return 8  # the party
    if (7 <= hour < 8.5) or (18 <= hour < 23):
        return 2
    return 0


def simulate_day(
    seed: int = 7, period_s: float = 60.0, prefix: str = "zigbee2mqtt"
) -> Iterator[SimMessage]:
    """Yield the day's messages in time order."""
    rng = random.Random(seed)
    temp = dict.fromkeys(AREAS, 19.0)
    co2 = 450.0
    window_open = False
    t = 0.0
    while t < DAY_S:
        hour = t / 3600
        opened = 14 <= hour < 14 + 40 / 60
        if opened != window_open:
            window_open = opened
            contact = {"contact": not opened, "battery": 87}
            yield SimMessage(t, f"{prefix}/living_room/window", json.dumps(contact).encode())
        for area in AREAS:
            target = 15.0 if (area == "living_room" and window_open) else _heating_target(hour)
            rate = 0.08 if area == "living_room" and window_open else 0.03
            temp[area] += (target - temp[area]) * rate * period_s / 60
            humidity = 47 + 6 * math.sin(2 * math.pi * (hour - 4) / 24)
            if area == "bathroom" and 7 <= hour < 7.5:
                humidity = 85 - 30 * (hour - 7) / 0.5
            doc: dict[str, float] = {
                "temperature": round(temp[area] + rng.gauss(0, 0.1), 1),
                "humidity": round(humidity + rng.gauss(0, 0.5), 1),
                "linkquality": rng.randint(60, 140),
            }
            if area == "living_room":
                outdoor = 420.0
                co2 += (_people(hour) * 5 - (co2 - outdoor) * 0.03) * period_s / 60
                doc["co2"] = round(co2)
            yield SimMessage(t, f"{prefix}/{area}/climate", json.dumps(doc).encode())
        if int(t) % 600 == 0:  # the fan plug reports every 10 minutes; it is off all day
            yield SimMessage(t, f"{prefix}/{FAN}", json.dumps({"power": 0.0}).encode())
        t += period_s
