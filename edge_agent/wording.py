"""Sentences and notes for findings, per language (English and French; others: English).

Each method returns ``(note, sentence)``: the short note the model is shown, and the
fallback sentence people read when the model's text is not published. Numbers arrive
already written (:class:`~edge_agent.findings.Number` ``.text``), so what is shown and
what is checked are the same strings. Pure code.
"""

from __future__ import annotations

from typing import Protocol

from edge_agent.semantics import Number

# Words that read well after "is" / "has been"; other states are written "X: state".
_ADJECTIVES = frozenset(
    {"open", "closed", "occupied", "empty", "locked", "unlocked", "on", "off", "offline",
     "online", "home", "away", "dry", "tampered"}
)  # fmt: skip
_FR_ARTICLES = {
    "température": "La température",
    "humidité": "L'humidité",
    "CO2": "Le CO2",
    "luminosité": "La luminosité",
    "pression": "La pression",
    "bruit": "Le bruit",
    "puissance": "La puissance",
}


def cap(text: str) -> str:
    """``text`` with its first letter upper-cased (the rest untouched: "CO2" stays)."""
    return text[:1].upper() + text[1:]


class Wording(Protocol):
    """The phrases of one language."""

    language: str
    quiet: str

    def number(self, value: float, decimals: int) -> str: ...
    def above_below(self, direction: str) -> str: ...
    def level_headline(self, label: str, metric: str, now: Number, trend: int = 0) -> str: ...
    def level(self, label: str, now: Number, trend: int) -> tuple[str, str]: ...
    def limit(
        self, label: str, now: Number, direction: str, limit: Number, trend: int
    ) -> tuple[str, str]: ...
    def excursion(
        self, label: str, direction: str, limit: Number, since: Number, peak: Number, now: Number
    ) -> tuple[str, str]: ...
    def jump(self, label: str, rising: bool, frm: Number, now: Number) -> tuple[str, str]: ...
    def usual(self, label: str, now: Number, above: bool, trend: int) -> tuple[str, str]: ...
    def explained(
        self,
        label: str,
        metric: str,
        frm: Number | None,
        to: Number,
        at: Number,
        cause: str | None,
        state: str | None,
    ) -> tuple[str, str]: ...
    def explained_headline(
        self, label: str, metric: str, frm: Number | None, to: Number, at: Number
    ) -> str: ...
    def stale(self, device: str, since: Number) -> tuple[str, str]: ...
    def battery(self, device: str, value: Number) -> tuple[str, str]: ...
    def since(self, subject: str, state: str, since: Number) -> tuple[str, str]: ...
    def visits(
        self, subject: str, event: str, n: Number, last: Number, state: str
    ) -> tuple[str, str]: ...
    def steady(self, subject: str, state: str) -> tuple[str, str]: ...
    def in_area(self, area: str, sentence: str) -> str: ...


def _switched(frm: Number, to: Number) -> bool:
    """Whether a light level went from (nearly) dark to lit, or back: a light on or off."""
    low, high = sorted((frm.value, to.value))
    return high > 0 and low <= 0.1 * high


class English:
    """English phrases."""

    language = "en"
    quiet = "All quiet"

    def number(self, value: float, decimals: int) -> str:
        text = f"{value:,.{decimals}f}"
        return "0" if text.strip("-0.,") == "" else text

    def above_below(self, direction: str) -> str:
        return "above" if direction == "above" else "below"

    def _trend(self, trend: int, sep: str = " and ") -> str:
        return "" if not trend else f"{sep}{'rising' if trend > 0 else 'falling'}"

    def level_headline(self, label: str, metric: str, now: Number, trend: int = 0) -> str:
        if metric == "temperature":
            head = now.text
        elif metric == "humidity":
            head = f"{now.text} humidity"
        else:
            head = f"{label} {now.text}"
        return head + self._trend(trend)

    def level(self, label: str, now: Number, trend: int) -> tuple[str, str]:
        return (
            f"{label} {now.text}{self._trend(trend, ', ')}",
            f"{cap(label)} is {now.text}{self._trend(trend)}.",
        )

    def limit(
        self, label: str, now: Number, direction: str, limit: Number, trend: int
    ) -> tuple[str, str]:
        where = f"{direction} the {limit.text} limit"
        return (
            f"{label} {now.text}, {where}{self._trend(trend, ', ')}",
            f"{cap(label)} is {now.text}, {where}{self._trend(trend)}.",
        )

    def excursion(
        self, label: str, direction: str, limit: Number, since: Number, peak: Number, now: Number
    ) -> tuple[str, str]:
        tail = "" if peak.value == now.value else f", now {now.text}"
        note = f"{label} {direction} {limit.text} since {since.text}, peak {peak.text}{tail}"
        end = "" if not tail else f"; it is {now.text} now"
        sentence = (
            f"{cap(label)} has been {direction} {limit.text} since {since.text}, "
            f"peak {peak.text}{end}."
        )
        return note, sentence

    def jump(self, label: str, rising: bool, frm: Number, now: Number) -> tuple[str, str]:
        verb = "rose" if rising else "fell"
        return (
            f"{label} {verb} from {frm.text} to {now.text}",
            f"{cap(label)} {verb} from {frm.text} to {now.text}.",
        )

    def usual(self, label: str, now: Number, above: bool, trend: int) -> tuple[str, str]:
        side = "above" if above else "below"
        return (
            f"{label} {now.text}, well {side} usual",
            f"{cap(label)} is {now.text}, well {side} usual{self._trend(trend)}.",
        )

    def explained(
        self,
        label: str,
        metric: str,
        frm: Number | None,
        to: Number,
        at: Number,
        cause: str | None,
        state: str | None,
    ) -> tuple[str, str]:
        # The numbers come before "when": the cause's words must not claim them (grounding).
        # No cause is said when the series explains itself (a lamp's own step).
        if cause is None:
            why = ""
        elif not state:
            why = f" when the {cause} changed"
        elif state in ("on", "off"):
            why = f" when {cause} turned {state}"
        else:
            why = f" when {cause} became {state}"
        if frm is None:
            note = f"{label} reached {to.text} at {at.text}{why}"
        elif metric == "illuminance" and _switched(frm, to):
            verb = "came on" if to.value > frm.value else "went off"
            span = f"from {frm.text} to {to.text}"
            note = f"the light {verb} at {at.text}, {span}{',' if why else ''}{why}"
        else:
            verb = "rose" if to.value >= frm.value else "fell"
            note = f"{label} {verb} from {frm.text} to {to.text} at {at.text}{why}"
        return note, f"{cap(note)}."

    def explained_headline(
        self, label: str, metric: str, frm: Number | None, to: Number, at: Number
    ) -> str:
        if frm is None:
            return f"{label} {to.text} at {at.text}"
        if metric == "illuminance" and _switched(frm, to):
            return f"light {'on' if to.value > frm.value else 'off'} at {at.text}"
        return f"{label} {'rose' if to.value >= frm.value else 'fell'} at {at.text}"

    def stale(self, device: str, since: Number) -> tuple[str, str]:
        return (
            f"{device} silent since {since.text}",
            f"{device} has sent nothing since {since.text}.",
        )

    def battery(self, device: str, value: Number) -> tuple[str, str]:
        return (
            f"{device} battery low at {value.text}",
            f"{device} battery is low at {value.text}.",
        )

    def since(self, subject: str, state: str, since: Number) -> tuple[str, str]:
        note = f"{subject} {state} since {since.text}"
        if state in _ADJECTIVES:
            return note, f"{subject} has been {state} since {since.text}."
        return note, f"{subject}: {state} since {since.text}."

    def visits(
        self, subject: str, event: str, n: Number, last: Number, state: str
    ) -> tuple[str, str]:
        times = "once" if n.value == 1 else f"{n.text} times"
        return (
            f"{subject} {event} {times}, last at {last.text}, now {state}",
            f"{subject} {event} {times}, last at {last.text}; it is {state} now.",
        )

    def steady(self, subject: str, state: str) -> tuple[str, str]:
        if state in _ADJECTIVES:
            return f"{subject} {state}", f"{subject} is {state}."
        return f"{subject} {state}", f"{subject}: {state}."

    def in_area(self, area: str, sentence: str) -> str:
        return f"{area}: {sentence}"


class French:
    """French phrases (the seed article is French)."""

    language = "fr"
    quiet = "Rien à signaler"

    def number(self, value: float, decimals: int) -> str:
        text = f"{value:.{decimals}f}".replace(".", ",")
        return "0" if text.strip("-0,") == "" else text

    def above_below(self, direction: str) -> str:
        return "au-dessus de" if direction == "above" else "en dessous de"

    def _trend(self, trend: int, sep: str = " et ") -> str:
        return "" if not trend else f"{sep}{'en hausse' if trend > 0 else 'en baisse'}"

    def _art(self, label: str) -> str:
        return _FR_ARTICLES.get(label, cap(label))

    def level_headline(self, label: str, metric: str, now: Number, trend: int = 0) -> str:
        head = now.text if metric == "temperature" else f"{label} {now.text}"
        return head + self._trend(trend)

    def level(self, label: str, now: Number, trend: int) -> tuple[str, str]:
        return (
            f"{label} {now.text}{self._trend(trend, ', ')}",
            f"{self._art(label)} est de {now.text}{self._trend(trend)}.",
        )

    def limit(
        self, label: str, now: Number, direction: str, limit: Number, trend: int
    ) -> tuple[str, str]:
        where = f"{self.above_below(direction)} la limite de {limit.text}"
        return (
            f"{label} {now.text}, {where}{self._trend(trend, ', ')}",
            f"{self._art(label)} est de {now.text}, {where}{self._trend(trend)}.",
        )

    def excursion(
        self, label: str, direction: str, limit: Number, since: Number, peak: Number, now: Number
    ) -> tuple[str, str]:
        where = self.above_below(direction)
        tail = "" if peak.value == now.value else f", actuellement {now.text}"
        note = f"{label} {where} {limit.text} depuis {since.text}, pic à {peak.text}{tail}"
        return note, (
            f"{self._art(label)} est {where} {limit.text} depuis {since.text}, "
            f"avec un pic à {peak.text}{tail}."
        )

    def jump(self, label: str, rising: bool, frm: Number, now: Number) -> tuple[str, str]:
        verb = "a augmenté" if rising else "a baissé"
        return (
            f"{label} {verb} de {frm.text} à {now.text}",
            f"{self._art(label)} {verb} de {frm.text} à {now.text}.",
        )

    def usual(self, label: str, now: Number, above: bool, trend: int) -> tuple[str, str]:
        side = "bien au-dessus" if above else "bien en dessous"
        return (
            f"{label} {now.text}, {side} de l'habitude",
            f"{self._art(label)} est de {now.text}, {side} de l'habitude{self._trend(trend)}.",
        )

    def explained(
        self,
        label: str,
        metric: str,
        frm: Number | None,
        to: Number,
        at: Number,
        cause: str | None,
        state: str | None,
    ) -> tuple[str, str]:
        # "l'état de X est passé à": agrees whatever the gender of X.
        if cause is None:
            why = ""
        elif state:
            why = f", quand l'état de {cause} est passé à {state}"
        else:
            why = f", quand {self._art(cause)[:1].lower()}{self._art(cause)[1:]} a changé"
        if frm is None:
            note = f"{label} a atteint {to.text} à {at.text}{why}"
            return note, f"{self._art(label)} a atteint {to.text} à {at.text}{why}."
        verb = "a augmenté" if to.value >= frm.value else "a baissé"
        note = f"{label} {verb} de {frm.text} à {to.text} à {at.text}{why}"
        return note, f"{self._art(label)} {verb} de {frm.text} à {to.text} à {at.text}{why}."

    def explained_headline(
        self, label: str, metric: str, frm: Number | None, to: Number, at: Number
    ) -> str:
        if frm is None:
            return f"{label} {to.text} à {at.text}"
        return f"{label} {'en hausse' if to.value >= frm.value else 'en baisse'} à {at.text}"

    def stale(self, device: str, since: Number) -> tuple[str, str]:
        return (
            f"{device} muet depuis {since.text}",
            f"{device} n'envoie plus rien depuis {since.text}.",
        )

    def battery(self, device: str, value: Number) -> tuple[str, str]:
        return (
            f"{device} batterie faible à {value.text}",
            f"La batterie de {device} est faible : {value.text}.",
        )

    def since(self, subject: str, state: str, since: Number) -> tuple[str, str]:
        return f"{subject} {state} depuis {since.text}", f"{subject} : {state} depuis {since.text}."

    def visits(
        self, subject: str, event: str, n: Number, last: Number, state: str
    ) -> tuple[str, str]:
        return (
            f"{subject} {event} {n.text} fois, la dernière à {last.text}, {state} maintenant",
            f"{subject} : {event} {n.text} fois, la dernière à {last.text} ; {state} maintenant.",
        )

    def steady(self, subject: str, state: str) -> tuple[str, str]:
        return f"{subject} {state}", f"{subject} : {state}."

    def in_area(self, area: str, sentence: str) -> str:
        return f"{area} : {sentence}"


_WORDINGS: dict[str, Wording] = {"en": English(), "fr": French()}


def wording(language: str) -> Wording:
    """The phrases of ``language``; English for a language without its own."""
    return _WORDINGS.get(language, _WORDINGS["en"])
