"""What a metric means before any number is shown: its kind, its words, display names.

Every metric is one of four kinds:

* ``level``: a quantity with a unit (temperature, humidity, CO2, light, pressure...);
* ``state``: a binary state with a word for each value, per language (zigbee2mqtt's
  ``contact: true`` is *closed*; ``occupancy: true`` is *occupied*);
* ``counter``: a total that only grows (energy);
* ``diagnostic``: housekeeping (battery, link quality, voltage...), out of narration
  unless notable (a battery at 15 % or less, a device offline).

Display names come from the config's ``device_names`` / ``area_names`` tables, names a
device announced (Home Assistant's ``friendly_name``), or a humanized id
(``living_room`` -> "Living room"). No raw id, underscore or 0/1 state leaves here.
Pure code: imports only the domain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from edge_agent.domain import MetricFacts
from edge_agent.words import (
    LEVELS,
    STATE_NOUNS,
    VOCABULARIES,
    LevelInfo,
    Vocabulary,
)

Kind = Literal["level", "state", "counter", "diagnostic"]
Role = Literal["now", "limit", "peak", "from", "to", "usual", "count", "time"]
"""``from``/``to``: the level before and after a past change (not the current value)."""

LANGUAGES = ("en", "fr")
"""Languages with their own words; any other language falls back to English words."""


@dataclass(frozen=True, slots=True)
class Number:
    """One citable number exactly as shown: value (rounded as written), unit, role."""

    value: float
    decimals: int
    unit: str
    """The unit written after it; "" for counts, "time" for clock times (value: minutes)."""
    role: Role
    text: str

    @property
    def digits(self) -> str:
        """The number as written, without its unit ("1,250" of "1,250 ppm")."""
        return self.text if self.unit in ("", "time") else self.text.rsplit(" ", 1)[0]


# Metric name (normalised) -> state vocabulary.
_STATE_METRICS: dict[str, str] = {
    "contact": "contact",
    "door": "opening",
    "window": "opening",
    "opening": "opening",
    "door_state": "opening",
    "window_open": "opening",
    "garage_door": "opening",
    "occupancy": "occupancy",
    "occupied": "occupancy",
    "presence": "occupancy",
    "motion": "motion",
    "water_leak": "water_leak",
    "leak": "water_leak",
    "smoke": "smoke",
    "gas": "gas",
    "carbon_monoxide": "gas",
    "tamper": "tamper",
    "lock": "lock",
    "locked": "lock",
    "child_lock": "lock",
    "state": "switch",
    "switch": "switch",
    "power_state": "switch",
    "on": "switch",
    "available": "available",
    "battery_low": "battery_low",
}

# Words in a Home Assistant entity id that say what its bare ``state`` means.
_STATE_HINTS: tuple[tuple[str, str], ...] = (
    ("leak", "water_leak"),
    ("water", "water_leak"),
    ("smoke", "smoke"),
    ("gas", "gas"),
    ("motion", "motion"),
    ("occupancy", "occupancy"),
    ("presence", "occupancy"),
    ("door", "opening"),
    ("window", "opening"),
    ("gate", "opening"),
    ("garage", "opening"),
    ("lock", "lock"),
)


_LEVEL_ALIASES: dict[str, str] = {
    "local_temperature": "temperature",
    "temp": "temperature",
    "illuminance_lux": "illuminance",
    "light": "illuminance",
    "lux": "illuminance",
    "light_level": "illuminance",
    "carbon_dioxide": "co2",
    "eco2": "co2",
    "pm2_5": "pm25",
    "relative_humidity": "humidity",
}

_COUNTERS = frozenset({"energy", "count", "water_consumption", "gas_consumption", "pulses"})

_DIAGNOSTICS = frozenset(
    {"battery", "linkquality", "link_quality", "rssi", "wifi_rssi", "wifi_signal", "voltage",
     "battery_voltage", "uptime", "update_available", "device_temperature", "humidity_ratio",
     "signal", "current", "power_outage_count", "lqi", "snr"}
)  # fmt: skip

_SHOWN_KEPT = 8192
"""Display names cached at most (device, area pairs): a few per series at the caps."""

LOW_BATTERY = 15.0
"""A battery at or below this many percent is news, like any other finding."""

_ACRONYMS = {"co2": "CO2", "tv": "TV", "pm25": "PM2.5", "voc": "VOC", "ac": "AC", "usb": "USB"}
_HEX_ID = re.compile(r"^0x[0-9a-f]{6,}$", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def normalise(metric: str) -> str:
    """``HumidityRatio`` -> ``humidity_ratio``; ``Light Level`` -> ``light_level``."""
    snake = _CAMEL.sub("_", metric.strip())
    return re.sub(r"[\s\-]+", "_", snake).lower()


@dataclass(frozen=True, slots=True)
class Meaning:
    """What one (device, metric) is: kind, words, the unit to show, the precision."""

    kind: Kind
    metric: str
    """The normalised metric (an alias resolved: ``illuminance_lux`` -> ``illuminance``)."""
    unit: str
    """The unit to write; "" for none."""
    decimals: int = 1
    vocabulary: Vocabulary | None = None
    level: LevelInfo | None = None

    def label(self, language: str) -> str:
        """The metric's name in ``language`` ("temperature", "CO2", "humidité")."""
        if self.level is not None:
            return self.level.label.get(language) or self.level.label["en"]
        return humanize(self.metric).lower() if self.metric != "co2" else "CO2"

    def words(self) -> tuple[str, ...]:
        """Lower-case words that name this metric in any supported language."""
        vocab = self.vocabulary.key if self.vocabulary is not None else None
        return _metric_name_words(self.metric, vocab, self.level is not None)


@lru_cache(maxsize=4096)
def _metric_name_words(metric: str, vocab: str | None, level: bool) -> tuple[str, ...]:
    """:meth:`Meaning.words`, cached (a level's info is that of its metric id)."""
    base = {metric, *metric.split("_")}
    info = LEVELS.get(metric) if level else None
    if info is not None:
        base.update(w.lower() for w in info.label.values())
        base.update(info.synonyms)
    if vocab is not None:
        base.update(STATE_NOUNS.get(vocab, ()))
    if metric == "battery":
        base.update(("battery", "batterie", "pile"))
    return tuple(sorted(w for w in base if w))


def meaning(fact: MetricFacts) -> Meaning:
    """The meaning of a fact's metric, from its name, device id, unit and values."""
    return classify(fact.device, fact.metric, fact.unit, _looks_binary(fact))


def _looks_binary(fact: MetricFacts) -> bool:
    return fact.unit is None and (
        bool(fact.changes) or (fact.min in (0.0, 1.0) and fact.max in (0.0, 1.0))
    )


@lru_cache(maxsize=4096)
def classify(device: str, metric: str, unit: str | None, binary: bool) -> Meaning:
    """See :func:`meaning`; ``binary``: every reading was 0 or 1 without a unit.

    Cached: every summary and answer asks it again for the same series (a thousand
    series cost milliseconds of regexes per ask otherwise); a Meaning is immutable.
    """
    name = normalise(metric)
    name = _LEVEL_ALIASES.get(name, name)
    if name == "state" and not binary:
        # A Home Assistant sensor's state: its entity id says what it measures.
        name = _level_hint(device) or name
    vocab_key = _STATE_METRICS.get(name)
    generic = name in ("state", "switch", "power", "on")
    if binary and (generic or (vocab_key is None and name not in LEVELS)):
        vocab_key = _state_hint(device) or vocab_key or "switch"
    if vocab_key is not None and (binary or not generic):
        vocab = VOCABULARIES[vocab_key]
        kind: Kind = "diagnostic" if vocab_key in ("available", "battery_low") else "state"
        return Meaning(kind, name, "", 0, vocabulary=vocab)
    if name == "battery" or name.endswith("_battery"):
        return Meaning("diagnostic", "battery", unit or "%", 0)
    if name in _DIAGNOSTICS:
        return Meaning("diagnostic", name, unit or "", 2)
    if name in _COUNTERS:
        return Meaning("counter", name, unit or "", 2)
    info = LEVELS.get(name)
    if info is not None:
        return Meaning("level", name, unit or info.unit or "", info.decimals, level=info)
    return Meaning("level", name, unit or "", 1 if unit else 2)


def _level_hint(device: str) -> str | None:
    """The level an entity id names (``sensor.office_co2`` -> ``co2``), if any."""
    words = re.split(r"[^a-z0-9]+", device.lower())
    for word in reversed(words):
        word = _LEVEL_ALIASES.get(word, word)
        if word in LEVELS or word == "battery":
            return word
    return None


def _state_hint(device: str) -> str | None:
    """What a Home Assistant entity's on/off state means, from its domain and object id."""
    lowered = device.lower()
    domain = lowered.partition(".")[0] if "." in lowered else ""
    if domain == "lock":
        return "lock"
    if domain in ("person", "device_tracker"):
        return "presence"
    if domain == "cover":
        return "opening"
    for word, key in _STATE_HINTS:
        if word in lowered:
            return key
    return None


def humanize(ident: str) -> str:
    """A readable name from an id: ``binary_sensor.front_door`` -> "Front door"."""
    text = ident.strip()
    if " " in text and not re.search(r"[_/]", text):
        return text[:1].upper() + text[1:]  # already a name ("Living Room", "salon")
    if "." in text and re.match(r"^[a-z_]+\.[\w]+$", text):
        text = text.partition(".")[2]  # a Home Assistant entity id: drop the domain
    words = [w for w in re.split(r"[\s_/\-.]+", _CAMEL.sub(" ", text)) if w]
    if not words:
        return "Sensor"
    words = [_ACRONYMS.get(w.lower(), w.lower()) for w in words]
    first = words[0]
    words[0] = first[:1].upper() + first[1:]
    return " ".join(words)


@dataclass(slots=True)
class Naming:
    """Display names for devices and areas; learns names devices announce."""

    device_names: Mapping[str, str] = field(default_factory=dict)
    area_names: Mapping[str, str] = field(default_factory=dict)
    learned: dict[str, str] = field(default_factory=dict)
    """Names announced by the devices themselves (Home Assistant's ``friendly_name``)."""
    version: int = 0
    """Bumped when a learned name changes (caches of display names key on it)."""
    shown: dict[tuple[str, str | None], str] = field(default_factory=dict)
    """Display names already worked out, per (device, area): findings ask for every
    series on every summary and answer. Emptied when a name is learned or it is full."""

    def learn(self, device: str, name: str) -> None:
        """Remember a device's own name (config still wins)."""
        clean = " ".join(name.split())[:80]
        if clean and "_" not in clean and self.learned.get(device) != clean:
            self.learned[device] = clean
            self.version += 1
            self.shown.clear()

    def device(self, device: str, area: str | None = None) -> str:
        """The device's display name; a bare hex address becomes "<Area> sensor"."""
        key = (device, area)
        name = self.shown.get(key)
        if name is None:
            if len(self.shown) >= _SHOWN_KEPT:
                self.shown.clear()
            name = self.shown[key] = self._device(device, area)
        return name

    def _device(self, device: str, area: str | None) -> str:
        name = self.device_names.get(device) or self.learned.get(device)
        if name:
            return name
        if _HEX_ID.match(device.rsplit("/", 1)[-1]):
            return f"{self.area(area)} sensor" if area else "Sensor"
        if area and device.lower().startswith(area.lower() + "/"):
            # zigbee2mqtt names like "hallway/front_door": the area is said elsewhere.
            return humanize(device[len(area) + 1 :])
        return humanize(device)

    def area(self, area: str | None) -> str:
        """The area's display name; "Home" for readings without one."""
        if area is None:
            return "Home"
        key = ("\x00", area)  # no device is named NUL (MQTT forbids it in topics)
        name = self.shown.get(key)
        if name is None:
            if len(self.shown) >= _SHOWN_KEPT:
                self.shown.clear()
            name = self.shown[key] = self.area_names.get(area) or humanize(area)
        return name

    def names_of(self, device: str, area: str | None) -> tuple[str, ...]:
        """Every way a text may name this device (display name and raw id), lower case."""
        return tuple({self.device(device, area).lower(), device.lower()})


_GENERIC_IDS = frozenset({"state", "on"})
"""Metric ids too generic to select series by (every Home Assistant entity has a state)."""


def _metric_words() -> dict[str, frozenset[str]]:
    """Question word -> the metric ids (and id words) it means: "warm" -> temperature,
    temp; "door" -> contact, door, window, opening... Single-word ids only: a compound
    alias (``local_temperature``) is found by its words."""
    out: dict[str, set[str]] = {}

    def add(word: str, metrics: set[str]) -> None:
        if " " not in word:
            out.setdefault(word.lower(), set()).update(
                m for m in metrics if "_" not in m and m not in _GENERIC_IDS
            )

    for key, info in LEVELS.items():
        metrics = {key, *(a for a, k in _LEVEL_ALIASES.items() if k == key)}
        for word in (*info.synonyms, *info.label.values(), key):
            add(word, metrics)
    for vocab, nouns in STATE_NOUNS.items():
        metrics = {m for m, v in _STATE_METRICS.items() if v == vocab}
        metrics.update(w for w, v in _STATE_HINTS if v == vocab)
        states = VOCABULARIES[vocab].words.values()
        for word in (*nouns, *(x for lang in states for x in (*lang.on, *lang.off))):
            add(word, metrics)
    for word in ("battery", "batterie", "pile"):
        add(word, {"battery"})
    return {word: frozenset(metrics) for word, metrics in out.items()}


_QUESTION_METRICS = _metric_words()


def question_metrics(word: str) -> frozenset[str]:
    """The metric ids a (lower-case) question word means, for finding the series an ask
    is about before any finding is made; empty for a word that names no metric."""
    return _QUESTION_METRICS.get(word, frozenset())
