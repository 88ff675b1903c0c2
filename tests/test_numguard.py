"""The number guard: while a number is written, only a shown number can come out."""

from __future__ import annotations

import numpy as np

from edge_agent.numguard import NumberGuard

VOCAB = ["CO", " is", " ", "1", "2", "5", "0", ",", ".", " ppm", "7", " 9", "x"]
GUARD = NumberGuard([t.encode() for t in VOCAB])
ID = {t: i for i, t in enumerate(VOCAB)}


def _allowed(generated: list[str], numbers: tuple[str, ...] = ("1,250", "21.5")) -> set[str]:
    proc = GUARD.processor(numbers)
    logits = proc([ID[t] for t in generated], np.zeros(len(VOCAB), dtype=np.float32))
    return {VOCAB[i] for i in np.flatnonzero(np.isfinite(logits))}


def test_only_the_first_digits_of_shown_numbers_may_start_one() -> None:
    allowed = _allowed(["CO", "2", " is", " "])
    assert {"1", "2"} <= allowed
    assert not {"5", "0", "7", " 9"} & allowed
    assert {" ppm", "x", " is"} <= allowed  # words are free


def test_inside_a_number_it_must_go_on_as_a_shown_one() -> None:
    assert _allowed(["CO", "2", " is", " ", "1"]) == {","}
    assert _allowed(["CO", "2", " is", " ", "1", ",", "2", "5"]) == {"0"}


def test_a_complete_number_may_end() -> None:
    allowed = _allowed([" is", " ", "1", ",", "2", "5", "0"])
    assert " ppm" in allowed
    assert "5" not in allowed


def test_digits_inside_a_word_are_left_alone() -> None:
    assert "2" in _allowed(["CO"], ("1,250",))
