"""The proposal grammar: a byte-level automaton for the JSON the model may write.

Built from the allowlist, it accepts exactly
``{"action": <id>, "device": <one of its devices>, "params": {<typed, ranged>},
"reason": "<short text>"}`` (keys in that order, one optional space after ``:`` and
``,``) or ``{"action": "none", "reason": "..."}``. Pure code; ``dfa`` compiles it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from edge_agent.actions.numbers import complete, viable
from edge_agent.actions.types import NO_ACTION
from edge_agent.settings import ActionSpec, EnumParam, FloatParam, IntParam

QUOTE, BACKSLASH, SPACE = 0x22, 0x5C, 0x20
_NUMBER_BYTES = tuple(b"-0123456789.")
Sub = Hashable


class Item:
    """One piece of the grammar; ``sub`` is its own hashable progress."""

    def start(self) -> Sub:
        """Progress before the first byte."""
        return 0

    def step(self, sub: Sub, byte: int) -> Sub | None:
        """Progress after ``byte``, or None if the byte is not allowed here."""
        raise NotImplementedError

    def candidates(self, sub: Sub) -> Iterable[int]:
        """Bytes ``step`` may accept (a superset is fine; it keeps compiling fast)."""
        return range(256)

    def can_end(self, sub: Sub) -> bool:
        """The item is complete here (though it might take more bytes)."""
        return False

    def done(self, sub: Sub) -> bool:
        """The item is complete and takes no more bytes."""
        return False

    def counted(self, sub: Sub, byte: int) -> int:
        """Bytes this byte counts for against the length limit (free text only)."""
        return 0


@dataclass(frozen=True, eq=False)
class Lit(Item):
    """Fixed bytes."""

    text: bytes

    def step(self, sub: Sub, byte: int) -> Sub | None:
        assert isinstance(sub, int)
        return sub + 1 if sub < len(self.text) and self.text[sub] == byte else None

    def candidates(self, sub: Sub) -> Iterable[int]:
        assert isinstance(sub, int)
        return (self.text[sub],) if sub < len(self.text) else ()

    def can_end(self, sub: Sub) -> bool:
        return sub == len(self.text)

    def done(self, sub: Sub) -> bool:
        return sub == len(self.text)


class Space(Item):
    """One optional space."""

    def step(self, sub: Sub, byte: int) -> Sub | None:
        return 1 if sub == 0 and byte == SPACE else None

    def candidates(self, sub: Sub) -> Iterable[int]:
        return (SPACE,)

    def can_end(self, sub: Sub) -> bool:
        return True

    def done(self, sub: Sub) -> bool:
        return sub == 1


@dataclass(frozen=True, eq=False)
class EnumStr(Item):
    """A JSON string that is one of ``options`` (which need no escaping)."""

    options: tuple[bytes, ...]

    def start(self) -> Sub:
        return None

    def step(self, sub: Sub, byte: int) -> Sub | None:
        if sub is None:
            return b"" if byte == QUOTE else None
        if isinstance(sub, tuple):
            return None  # closed
        assert isinstance(sub, bytes)
        if byte == QUOTE:
            return (sub,) if sub in self.options else None
        grown = sub + bytes((byte,))
        return grown if any(o.startswith(grown) for o in self.options) else None

    def candidates(self, sub: Sub) -> Iterable[int]:
        if sub is None:
            return (QUOTE,)
        if isinstance(sub, tuple):
            return ()
        assert isinstance(sub, bytes)
        n = len(sub)
        nxt = {o[n] for o in self.options if o.startswith(sub) and len(o) > n}
        return (*nxt, QUOTE)

    def done(self, sub: Sub) -> bool:
        return isinstance(sub, tuple)

    def can_end(self, sub: Sub) -> bool:
        return isinstance(sub, tuple)


@dataclass(frozen=True, eq=False)
class Branch(EnumStr):
    """An :class:`EnumStr` whose value picks the rest of the document."""

    targets: tuple[int, ...] = ()
    """Index of the sequence that follows each option."""

    def target(self, sub: Sub) -> int:
        """The sequence the closed value leads to."""
        assert isinstance(sub, tuple)
        return self.targets[self.options.index(sub[0])]


@dataclass(frozen=True, eq=False)
class Number(Item):
    """A JSON number in [lo, hi] with at most ``decimals`` digits after the point."""

    lo: float
    hi: float
    decimals: int

    def start(self) -> Sub:
        return ""

    def step(self, sub: Sub, byte: int) -> Sub | None:
        assert isinstance(sub, str)
        if byte not in _NUMBER_BYTES:
            return None
        grown = sub + chr(byte)
        return grown if viable(grown, self.lo, self.hi, self.decimals) else None

    def candidates(self, sub: Sub) -> Iterable[int]:
        return _NUMBER_BYTES

    def can_end(self, sub: Sub) -> bool:
        assert isinstance(sub, str)
        return complete(sub, self.lo, self.hi, self.decimals)


class FreeStr(Item):
    """A JSON string of printable text: no escapes, no control bytes, valid UTF-8 leads.

    Its length in UTF-8 bytes is limited outside the state (``counted``), so one state
    serves every position and its token mask is computed once.
    """

    def start(self) -> Sub:
        return "open"

    def step(self, sub: Sub, byte: int) -> Sub | None:
        if sub == "open":
            return "in" if byte == QUOTE else None
        if sub == "closed":
            return None
        if isinstance(sub, tuple):  # inside a multi-byte character
            need, lo, hi = sub
            if not lo <= byte <= hi:
                return None
            return "in" if need == 1 else (need - 1, 0x80, 0xBF)
        if byte == QUOTE:
            return "closed"
        if byte == BACKSLASH or byte < 0x20 or byte == 0x7F:
            return None
        if byte < 0x80:
            return "in"
        return _utf8_lead(byte)

    def candidates(self, sub: Sub) -> Iterable[int]:
        return (QUOTE,) if sub == "open" else range(256)

    def done(self, sub: Sub) -> bool:
        return sub == "closed"

    def can_end(self, sub: Sub) -> bool:
        return sub == "closed"

    def counted(self, sub: Sub, byte: int) -> int:
        # A character counts in full at its first byte, so the limit never falls
        # inside a multi-byte character.
        if sub != "in" or byte == QUOTE:
            return 0
        return 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4


def _utf8_lead(byte: int) -> Sub | None:
    """State after the lead byte of a multi-byte UTF-8 character (no overlongs/surrogates)."""
    if 0xC2 <= byte <= 0xDF:
        return (1, 0x80, 0xBF)
    if byte == 0xE0:
        return (2, 0xA0, 0xBF)
    if byte == 0xED:
        return (2, 0x80, 0x9F)
    if 0xE1 <= byte <= 0xEF:
        return (2, 0x80, 0xBF)
    if byte == 0xF0:
        return (3, 0x90, 0xBF)
    if 0xF1 <= byte <= 0xF3:
        return (3, 0x80, 0xBF)
    if byte == 0xF4:
        return (3, 0x80, 0x8F)
    return None


State = tuple[int, int, Sub]
"""(sequence, item index, item progress)."""


class Grammar:
    """Sequences of items; ``step`` runs one byte, ``accepting`` ends the document."""

    def __init__(self, seqs: Sequence[Sequence[Item]], count_limit: int) -> None:
        self.seqs = tuple(tuple(s) for s in seqs)
        self.count_limit = count_limit
        """Most counted bytes (the free text) in one document."""

    @property
    def start(self) -> State:
        """The state before the first byte."""
        return (0, 0, self.seqs[0][0].start())

    def accepting(self, state: State) -> bool:
        """The document is complete."""
        seq, idx, _ = state
        return idx == len(self.seqs[seq])

    def step(self, state: State, byte: int) -> tuple[State, int] | None:
        """Next state and what the byte counts against the limit; None if refused."""
        seq, idx, sub = state
        items = self.seqs[seq]
        while idx < len(items):
            item = items[idx]
            new = item.step(sub, byte)
            if new is not None:
                return self._settle(seq, idx, new), item.counted(sub, byte)
            if not item.can_end(sub):
                return None
            idx += 1
            sub = items[idx].start() if idx < len(items) else None
        return None

    def candidates(self, state: State) -> set[int]:
        """Bytes worth trying from ``state`` (through optional or complete items)."""
        seq, idx, sub = state
        items = self.seqs[seq]
        found: set[int] = set()
        while idx < len(items):
            found.update(items[idx].candidates(sub))
            if not items[idx].can_end(sub):
                break
            idx += 1
            sub = items[idx].start() if idx < len(items) else None
        return found

    def _settle(self, seq: int, idx: int, sub: Sub) -> State:
        item = self.seqs[seq][idx]
        if not item.done(sub):
            return (seq, idx, sub)
        if isinstance(item, Branch):
            target = item.target(sub)
            return (target, 0, self.seqs[target][0].start())
        nxt = idx + 1
        items = self.seqs[seq]
        return (seq, nxt, items[nxt].start() if nxt < len(items) else None)


def _key(name: str) -> list[Item]:
    return [Lit(f'"{name}":'.encode()), Space()]


def _param_item(param: EnumParam | IntParam | FloatParam) -> Item:
    if isinstance(param, EnumParam):
        return EnumStr(tuple(v.encode() for v in param.values))
    if isinstance(param, IntParam):
        return Number(param.min, param.max, 0)
    return Number(param.min, param.max, param.decimals)


def build_grammar(specs: Sequence[ActionSpec], reason_max: int) -> Grammar:
    """The grammar of a proposal over ``specs`` (actions in mode 'off' are left out)."""
    live = [s for s in specs if s.mode != "off"]
    tail: list[Item] = [Lit(b","), Space(), *_key("reason"), FreeStr(), Lit(b"}")]
    seqs: list[list[Item]] = [[]]
    options, targets = [], []
    for spec in live:
        body: list[Item] = [Lit(b","), Space(), *_key("device")]
        body += [EnumStr(tuple(d.encode() for d in spec.devices)), Lit(b","), Space()]
        body += [*_key("params"), Lit(b"{")]
        for i, (name, param) in enumerate(spec.params.items()):
            if i:
                body += [Lit(b","), Space()]
            body += [*_key(name), _param_item(param)]
        body += [Lit(b"}"), *tail]
        options.append(spec.id.encode())
        targets.append(len(seqs))
        seqs.append(body)
    options.append(NO_ACTION.encode())
    targets.append(len(seqs))
    seqs.append(list(tail))
    # One optional space first: after "JSON:" a model writes " {" as one token, and
    # forcing "{" instead would count as overriding its choice (see constrain.forced).
    seqs[0] = [Space(), Lit(b"{"), *_key("action"), Branch(tuple(options), tuple(targets))]
    return Grammar(seqs, reason_max)
