"""The words of metrics: state words per language, level labels and synonyms (pure data).

:mod:`edge_agent.semantics` decides which of these a metric takes; grounding, prompts
and questions read the same lists, so what is written and what is checked agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StateWords:
    """Words of one binary metric in one language.

    ``on``/``off`` are what the state *is* (value 1.0 / 0.0); ``on_event``/``off_event``
    are the verbs for reaching it ("opened"). The first word of each is the one we write.
    """

    on: tuple[str, ...]
    off: tuple[str, ...]
    on_event: tuple[str, ...] = ()
    off_event: tuple[str, ...] = ()

    def current(self, value: bool) -> tuple[str, ...]:
        """Words for the state ``value``."""
        return self.on if value else self.off

    def event(self, value: bool) -> tuple[str, ...]:
        """Verbs for reaching the state ``value``."""
        return self.on_event if value else self.off_event


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """A state vocabulary: its words per language, and whether "on" is an alarm."""

    key: str
    words: Mapping[str, StateWords]
    alarm: bool = False
    """True for leak, smoke, gas, tamper: the "on" state is the most notable news."""

    def lang(self, language: str) -> StateWords:
        """The words in ``language`` (English when it has none)."""
        return self.words.get(language) or self.words["en"]


def _v(key: str, en: StateWords, fr: StateWords, alarm: bool = False) -> Vocabulary:
    return Vocabulary(key, {"en": en, "fr": fr}, alarm)


VOCABULARIES: dict[str, Vocabulary] = {
    # zigbee2mqtt: contact true = the magnet touches = closed.
    "contact": _v(
        "contact",
        StateWords(("closed", "shut"), ("open", "ajar"), ("closed", "shut"), ("opened",)),
        StateWords(("fermée", "fermé"), ("ouverte", "ouvert"), ("fermée",), ("ouverte",)),
    ),
    # Home Assistant's door/window/opening/garage classes: on = open.
    "opening": _v(
        "opening",
        StateWords(("open",), ("closed", "shut"), ("opened",), ("closed", "shut")),
        StateWords(("ouverte", "ouvert"), ("fermée", "fermé"), ("ouverte",), ("fermée",)),
    ),
    "occupancy": _v(
        "occupancy",
        StateWords(
            ("occupied", "someone", "somebody"),
            ("empty", "vacant", "unoccupied", "nobody", "no one"),
            ("arrived",),
            ("left",),
        ),
        StateWords(("occupé", "occupée"), ("vide", "inoccupé", "inoccupée"), (), ()),
    ),
    "motion": _v(
        "motion",
        StateWords(("motion detected",), ("no motion",)),
        StateWords(("mouvement détecté",), ("aucun mouvement",)),
    ),
    "water_leak": _v(
        "water_leak",
        StateWords(("leak detected", "leaking"), ("dry", "no leak")),
        StateWords(("fuite détectée",), ("pas de fuite",)),
        alarm=True,
    ),
    "smoke": _v(
        "smoke",
        StateWords(("smoke detected",), ("no smoke",)),
        StateWords(("fumée détectée",), ("pas de fumée",)),
        alarm=True,
    ),
    "gas": _v(
        "gas",
        StateWords(("gas detected",), ("no gas",)),
        StateWords(("gaz détecté",), ("pas de gaz",)),
        alarm=True,
    ),
    "tamper": _v(
        "tamper",
        StateWords(("tampered",), ("untouched",)),
        StateWords(("manipulé",), ("intact",)),
        alarm=True,
    ),
    "lock": _v(
        "lock",
        StateWords(("locked",), ("unlocked",), ("locked",), ("unlocked",)),
        StateWords(("verrouillée", "verrouillé"), ("déverrouillée", "déverrouillé")),
    ),
    "presence": _v(
        "presence",
        StateWords(("home",), ("away",), ("came home",), ("left",)),
        StateWords(("présent", "à la maison"), ("absent",)),
    ),
    "switch": _v(
        "switch",
        StateWords(("on",), ("off",), ("turned on", "switched on"), ("turned off", "switched off")),
        StateWords(("allumé", "allumée"), ("éteint", "éteinte")),
    ),
    "available": _v(
        "available",
        StateWords(("online",), ("offline",)),
        StateWords(("en ligne",), ("hors ligne",)),
    ),
    "battery_low": _v(
        "battery_low",
        StateWords(("battery low",), ("battery fine",)),
        StateWords(("batterie faible",), ("batterie correcte",)),
    ),
}


@dataclass(frozen=True, slots=True)
class LevelInfo:
    """A level metric: its labels, the unit shown when the payload has none, precision."""

    label: Mapping[str, str]
    unit: str | None
    decimals: int
    notable_delta: float
    """A change this large over a window is news (a shower, someone switching on a lamp)."""
    synonyms: tuple[str, ...] = ()


LEVELS: dict[str, LevelInfo] = {
    "temperature": LevelInfo(
        {"en": "temperature", "fr": "température"},
        "°C",
        1,
        1.5,
        (
            "temperature",
            "temp",
            "warm",
            "warmer",
            "cold",
            "colder",
            "cool",
            "hot",
            "heat",
            "degrees",
            "température",
            "chaud",
            "froid",
            "degrés",
            "chauffage",
        ),
    ),
    "humidity": LevelInfo(
        {"en": "humidity", "fr": "humidité"},
        "%",
        0,
        10.0,
        ("humidity", "humid", "damp", "moisture", "dry", "rh", "humidité", "humide", "sec"),
    ),
    "co2": LevelInfo(
        {"en": "CO2", "fr": "CO2"},
        "ppm",
        0,
        200.0,
        (
            "co2",
            "co₂",
            "carbon",
            "dioxide",
            "air",
            "stuffy",
            "ventilation",
            "ventilate",
            "aérer",
            "carbone",
            "qualité",
        ),
    ),
    "illuminance": LevelInfo(
        {"en": "light", "fr": "luminosité"},
        "lx",
        0,
        150.0,
        (
            "light",
            "lights",
            "bright",
            "brightness",
            "dark",
            "lux",
            "illuminance",
            "lumière",
            "luminosité",
            "sombre",
            "clair",
        ),
    ),
    "pressure": LevelInfo(
        {"en": "pressure", "fr": "pression"}, "hPa", 0, 4.0, ("pressure", "pression")
    ),
    "noise": LevelInfo({"en": "noise", "fr": "bruit"}, "dB", 0, 15.0, ("noise", "loud", "bruit")),
    "voc": LevelInfo({"en": "VOC", "fr": "COV"}, None, 0, 100.0, ("voc", "cov", "air")),
    "pm25": LevelInfo(
        {"en": "PM2.5", "fr": "PM2.5"}, "µg/m³", 0, 15.0, ("pm25", "pm2.5", "particles", "dust")
    ),
    "power": LevelInfo(
        {"en": "power", "fr": "puissance"}, "W", 0, 200.0, ("power", "watts", "puissance")
    ),
    "soil_moisture": LevelInfo(
        {"en": "soil moisture", "fr": "humidité du sol"}, "%", 0, 10.0, ("soil", "plant", "sol")
    ),
}

LEVEL_WORDS = frozenset(
    {"temperature", "humidity", "co2", "light", "pressure", "battery", "température",
     "humidité", "luminosité", "pression", "batterie", "noise", "lux"}
)  # fmt: skip
"""Words that name one level metric only: a number beside them is that metric's."""


STATE_NOUNS: dict[str, tuple[str, ...]] = {
    "contact": ("door", "doors", "window", "windows", "contact", "porte", "fenêtre"),
    "opening": ("door", "doors", "window", "windows", "gate", "porte", "fenêtre"),
    "occupancy": ("occupancy", "occupied", "someone", "anyone", "anybody", "somebody", "people",
                  "nobody", "presence", "empty", "vacant", "quelqu'un", "personne", "présence"),
    "motion": ("motion", "movement", "mouvement"),
    "water_leak": ("leak", "water", "flood", "fuite", "eau"),
    "smoke": ("smoke", "fire", "fumée", "feu"),
    "gas": ("gas", "gaz"),
    "tamper": ("tamper", "tampered"),
    "lock": ("lock", "locked", "unlocked", "serrure", "verrou"),
    "presence": ("home", "away", "présence"),
    "switch": ("switch", "plug", "lamp", "light", "power", "prise", "lampe"),
    "available": ("online", "offline", "available"),
    "battery_low": ("battery", "batterie"),
}  # fmt: skip
