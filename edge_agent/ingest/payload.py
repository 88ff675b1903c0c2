"""The raw MQTT payload and the checked decoders every adapter reads it through.

Every limit of :mod:`edge_agent.ingest.limits` applies here: depth before decoding,
number literals while decoding, lone surrogates after, magnitude and digits per reading.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import PayloadError
from edge_agent.ingest.limits import (
    MAX_INT_DIGITS,
    MAX_NUMBER_CHARS,
    check_depth,
    check_magnitude,
    check_unicode,
    non_ascii_digits,
    parse_float,
    parse_int,
)

DEFAULT_MAX_BYTES = 65536


def _reject_constant(name: str) -> Any:
    raise PayloadError("not_finite", f"{name} is not a finite number")


# One decoder for the process: json.loads(..., parse_constant=...) would build a new
# JSONDecoder on every call, which is measurable at tens of thousands of messages/s.
# The number hooks see each literal before int()/float() do, so a 5,000-digit integer is
# a reason code, not a ValueError (or an OverflowError once it meets float()).
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=parse_int, parse_float=parse_float
)

_SWITCH_WORDS: dict[str, float] = {"on": 1.0, "off": 0.0, "true": 1.0, "false": 0.0}
_AVAILABILITY_WORDS: dict[str, float] = {"online": 1.0, "offline": 0.0}


@dataclass(frozen=True, slots=True)
class Payload:
    """An MQTT payload as received; adapters decode it as text or JSON, with checks."""

    raw: bytes
    max_bytes: int = DEFAULT_MAX_BYTES

    def text(self) -> str:
        """Size-check and UTF-8-decode (reasons ``too_large``, ``invalid_utf8``)."""
        if len(self.raw) > self.max_bytes:
            raise PayloadError(
                "too_large", f"{len(self.raw)} bytes exceeds the {self.max_bytes}-byte cap"
            )
        try:
            return self.raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError("invalid_utf8", str(exc)) from exc

    def json(self) -> Any:
        """:meth:`text`, then parse JSON (``not_json``; NaN/Infinity are ``not_finite``).

        Also ``too_deep``, ``number_too_long`` and ``invalid_unicode`` (see ``limits``).
        """
        text = self.text()
        check_depth(text)
        try:
            doc = _DECODER.decode(text)
        except json.JSONDecodeError as exc:
            raise PayloadError("not_json", f"{exc.msg} at char {exc.pos}") from exc
        check_unicode(doc, text)
        return doc


def json_number(value: Any) -> float | None:
    """A JSON value as a reading: numbers, booleans and ``"ON"``/``"OFF"``; else None.

    Raises ``not_finite`` for numbers JSON can still overflow to infinity (``1e400``)
    and ``out_of_range`` beyond ``limits.MAX_MAGNITUDE``.
    """
    # bool first: it is an int subclass, and True must not be read as the number 1 by luck.
    if value is True:
        return 1.0
    if value is False:
        return 0.0
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise PayloadError("not_finite", f"{value!r} is not a finite number")
        return check_magnitude(number, "a reading")
    if isinstance(value, str):
        if value == "ON":
            return 1.0
        if value == "OFF":
            return 0.0
    return None


def text_number(text: str) -> float:
    """A plain-text reading: a decimal number, ``on``/``off`` or ``true``/``false``.

    Raises ``not_finite`` for ``nan``/``inf``, ``non_ascii_digits`` for ``２１`` (which
    ``float()`` would read), ``number_too_long``, ``out_of_range`` and ``wrong_type``.
    """
    word = text.strip()
    if non_ascii_digits(word):
        raise PayloadError("non_ascii_digits", f"{_clip(word)!r} has digits other than 0-9")
    digits = word.lstrip("+-")
    if len(word) > MAX_NUMBER_CHARS or (len(digits) > MAX_INT_DIGITS and digits.isdigit()):
        raise PayloadError(
            "number_too_long",
            f"{len(word)} characters (integers: at most {MAX_INT_DIGITS} digits, "
            f"any number: {MAX_NUMBER_CHARS} characters)",
        )
    try:
        number = float(word)
    except ValueError:
        switch = _SWITCH_WORDS.get(word.lower())
        if switch is None:
            raise PayloadError("wrong_type", f"{_clip(word)!r} is not a number or on/off") from None
        return switch
    # float() also accepts '1_000'; no device publishes that, so it is not a number here.
    if "_" in word:
        raise PayloadError("wrong_type", f"{_clip(word)!r} is not a number or on/off")
    if not math.isfinite(number):
        raise PayloadError("not_finite", f"{word!r} is not a finite number")
    return check_magnitude(number, "the reading")


def switch_value(text: str) -> float:
    """``ON``/``OFF`` in any case as 1.0/0.0, else ``wrong_type``."""
    word = text.strip().lower()
    if word == "on":
        return 1.0
    if word == "off":
        return 0.0
    raise PayloadError("wrong_type", f"{_clip(word)!r} is not ON or OFF")


def availability_value(text: str) -> float:
    """``online``/``offline`` in any case as 1.0/0.0, else ``wrong_type``."""
    value = _AVAILABILITY_WORDS.get(text.strip().lower())
    if value is None:
        raise PayloadError("wrong_type", f"{_clip(text)!r} is not online or offline")
    return value


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
