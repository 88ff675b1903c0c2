"""Compile a :class:`Grammar` into numpy transition tables (state x byte -> state)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.actions.grammar import Grammar, State

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


def compile_grammar(grammar: Grammar) -> Dfa:
    """Explore every reachable state breadth-first (a few thousand for real allowlists)."""
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
    return Dfa(trans, counted_t, accepting, _distances(trans, accepting), grammar.count_limit)


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
