"""Prefix viability of JSON numbers in a range: can this prefix still become a valid value?

Exact decimal arithmetic, so ``25`` is viable for 0..254 (25, 250..254) and ``26`` is not.
"""

from __future__ import annotations

from decimal import Decimal

_DIGITS = frozenset("0123456789")


def _bounds(lo: float, hi: float) -> tuple[Decimal, Decimal]:
    return Decimal(repr(lo)), Decimal(repr(hi))


def _max_int_digits(lo: Decimal, hi: Decimal) -> int:
    return len(str(int(max(abs(lo), abs(hi))))) if max(abs(lo), abs(hi)) >= 1 else 1


def _overlaps(a: Decimal, b: Decimal, lo: Decimal, hi: Decimal) -> bool:
    return a <= hi and b >= lo


def _split(prefix: str) -> tuple[bool, str, str | None]:
    neg = prefix.startswith("-")
    body = prefix[1:] if neg else prefix
    whole, dot, frac = body.partition(".")
    return neg, whole, (frac if dot else None)


def well_formed_prefix(prefix: str, decimals: int) -> bool:
    """The JSON number grammar (no exponent, no leading zeros), as a prefix."""
    _, whole, frac = _split(prefix)
    if not set(whole) <= _DIGITS or (frac is not None and not set(frac) <= _DIGITS):
        return False
    if len(whole) > 1 and whole[0] == "0":
        return False
    if frac is not None:
        return bool(whole) and decimals > 0 and len(frac) <= decimals
    return True


def viable(prefix: str, lo_f: float, hi_f: float, decimals: int) -> bool:
    """True when some number in [lo, hi] with at most ``decimals`` decimals starts so."""
    if not well_formed_prefix(prefix, decimals):
        return False
    lo, hi = _bounds(lo_f, hi_f)
    neg, whole, frac = _split(prefix)
    if neg and lo >= 0 and not (decimals and lo == 0 and whole in ("", "0")):
        return False
    if neg and whole == "0" and frac is None and decimals == 0:
        return False  # "-0" as an integer: write 0
    step = Decimal(1).scaleb(-decimals)
    spans: list[tuple[Decimal, Decimal]] = []
    if not whole:
        return _overlaps(
            Decimal("-Infinity") if neg else Decimal(0),
            Decimal(0) if neg else Decimal("Infinity"),
            lo,
            hi,
        )
    if frac is None:
        extra = 0 if whole == "0" else max(_max_int_digits(lo, hi) - len(whole), 0)
        for k in range(extra + 1):
            base = Decimal(int(whole) * 10**k)
            spans.append((base, base + Decimal(10**k) - step))
    else:
        value = Decimal(f"{whole}.{frac}") if frac else Decimal(whole)
        spans.append((value, value + Decimal(1).scaleb(-len(frac)) - step))
    for a, b in spans:
        if neg:
            a, b = -b, -a
        if _overlaps(a, b, lo, hi):
            return True
    return False


def complete(prefix: str, lo_f: float, hi_f: float, decimals: int) -> bool:
    """True when ``prefix`` is itself a number in [lo, hi] we accept."""
    if not well_formed_prefix(prefix, decimals):
        return False
    neg, whole, frac = _split(prefix)
    if not whole or frac == "" or (neg and whole == "0" and not frac):
        return False
    lo, hi = _bounds(lo_f, hi_f)
    return lo <= Decimal(prefix) <= hi
