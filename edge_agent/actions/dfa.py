"""Compile a :class:`Grammar` into numpy transition tables (state x byte -> state).

The grammar's states are (sequence, item, progress), so identical suffixes in different
sequences (every action ends with the same ``"reason"`` tail) start out as distinct
states. Merging equivalent states afterwards makes those one state, hence one token
mask: on a 262k vocabulary the free-text mask alone is about 4 MB.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.actions.grammar import Grammar, State
from edge_agent.errors import ConfigError

DEAD = 0
"""State 0 refuses everything; the grammar's start is state 1."""


@dataclass(frozen=True, slots=True)
class Dfa:
    """Deterministic tables of a grammar, ready for vectorised token masks."""

    trans: npt.NDArray[np.int32]
    """[states, 256] next state, ``DEAD`` when the byte is refused."""
    counted: npt.NDArray[np.int32]
    """[states, 256] what the byte counts against ``count_limit`` (free text)."""
    accepting: npt.NDArray[np.bool_]
    to_accept: npt.NDArray[np.int32]
    """Fewest bytes from each state to a complete document."""
    count_limit: int
    start: int = 1

    @property
    def size(self) -> int:
        """Number of states, the dead one included."""
        return int(self.trans.shape[0])


def compile_grammar(grammar: Grammar, *, merge: bool = True) -> Dfa:
    """Explore every reachable state breadth-first, then merge the equivalent ones.

    ``merge=False`` keeps one state per grammar position (tests and the benchmark
    compare the two).
    """
    ids: dict[State, int] = {grammar.start: 1}
    order: list[State] = [grammar.start]
    rows: list[dict[int, tuple[int, int]]] = []
    queue = deque([grammar.start])
    while queue:
        state = queue.popleft()
        row: dict[int, tuple[int, int]] = {}
        for byte in grammar.candidates(state):
            moved = grammar.step(state, byte)
            if moved is None:
                continue
            nxt, counted = moved
            if nxt not in ids:
                ids[nxt] = len(order) + 1
                order.append(nxt)
                queue.append(nxt)
            row[byte] = (ids[nxt], counted)
        rows.append(row)
    n = len(order) + 1
    trans = np.zeros((n, 256), dtype=np.int32)
    counted_t = np.zeros((n, 256), dtype=np.int32)
    for i, row in enumerate(rows, start=1):
        for byte, (target, counted) in row.items():
            trans[i, byte] = target
            counted_t[i, byte] = counted
    accepting = np.array([False] + [grammar.accepting(s) for s in order])
    if merge:
        trans, counted_t, accepting = _minimize(trans, counted_t, accepting)
    return Dfa(trans, counted_t, accepting, _distances(trans, accepting), grammar.count_limit)


Tables = tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.bool_]]


def _minimize(
    trans: npt.NDArray[np.int32], counted: npt.NDArray[np.int32], accepting: npt.NDArray[np.bool_]
) -> Tables:
    """Merge states that no input tells apart (Moore's partition refinement).

    Two states are equivalent when both accept or neither does and, for every byte,
    they count the same and move to equivalent states; the merged automaton then
    accepts and counts exactly as before. ``DEAD`` stays 0 and the start stays 1.
    """
    # Bytes that every state treats alike (all the plain letters of free text, all the
    # refused ones) need one column between them: it makes each round ~10x cheaper.
    kinds, _ = _classes(np.concatenate([trans, counted]).T)
    keep = np.unique(kinds, return_index=True)[1]
    moves, counts = trans[:, keep], counted[:, keep]
    # Start from what a state shows at once (acceptance, what each byte counts); each
    # round then splits classes whose members move to different classes.
    classes, groups = _classes(np.concatenate([accepting[:, None], counts], axis=1))
    while True:
        # The old class is part of the key, so classes only ever split.
        found, split = _classes(np.concatenate([classes[:, None], classes[moves]], axis=1))
        if split == groups:
            break
        classes, groups = found, split
    # Number the classes by first appearance, with DEAD's first and the start's next.
    first = np.unique(classes, return_index=True)[1]
    reps = sorted(first.tolist(), key=lambda s: (s != DEAD, s != 1, s))
    renumber = np.empty(groups, dtype=np.int32)
    renumber[classes[reps]] = np.arange(groups, dtype=np.int32)
    if renumber[classes[1]] != 1:
        raise ConfigError("the allowlist's grammar accepts no document")
    return renumber[classes[trans[reps]]], counted[reps], accepting[reps]


def _classes(rows: npt.NDArray[np.integer[Any]]) -> tuple[npt.NDArray[np.int32], int]:
    """One class id per distinct row, and the number of classes.

    A dict of row bytes: for a few hundred rows it is far faster than
    ``np.unique(axis=0)``, which compares column by column.
    """
    ids: dict[bytes, int] = {}
    packed = np.ascontiguousarray(rows, dtype=np.int32)
    found = np.array([ids.setdefault(r.tobytes(), len(ids)) for r in packed], dtype=np.int32)
    return found, len(ids)


def _distances(
    trans: npt.NDArray[np.int32], accepting: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int32]:
    """Backward breadth-first search from the accepting states."""
    n = trans.shape[0]
    back: list[set[int]] = [set() for _ in range(n)]
    for src, dst in zip(*np.nonzero(trans), strict=True):
        back[int(trans[src, dst])].add(int(src))
    far = np.iinfo(np.int32).max
    dist = np.full(n, far, dtype=np.int32)
    queue = deque(int(s) for s in np.flatnonzero(accepting))
    for s in queue:
        dist[s] = 0
    while queue:
        s = queue.popleft()
        for p in back[s]:
            if p != DEAD and dist[p] == far:
                dist[p] = dist[s] + 1
                queue.append(p)
    return dist
