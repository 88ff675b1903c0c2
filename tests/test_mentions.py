"""The name index says which known names a text mentions, exactly as a regex per name did."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.mentions import NameIndex


def _by_regex(text: str, names: list[str]) -> set[str]:
    """The former check: a whole-word search per name, underscores also as spaces."""
    lowered = text.lower()
    out = set()
    for name in names:
        key = name.lower()
        variants = {key, key.replace("_", " ")}
        if key and any(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", lowered) for v in variants):
            out.add(name)
    return out


def test_whole_words_only_and_ids_match_with_spaces() -> None:
    index = NameIndex(["kitchen", "living_room", "Front door", "0x00158d", "living room"])
    text = "The kitchenette is warm; the Living Room and the front door are fine (0x00158d)."
    assert list(index.mentioned(text)) == ["living_room", "living room", "Front door", "0x00158d"]
    assert list(NameIndex([]).mentioned(text)) == []
    assert list(index.mentioned("")) == []


_ALPHABET = st.sampled_from([*"ab_ -./é1", "Ab", "B"])
_NAME = st.lists(_ALPHABET, min_size=1, max_size=6).map("".join)


@given(names=st.lists(_NAME, max_size=8), text=st.lists(_ALPHABET, max_size=40).map("".join))
def test_the_index_finds_what_a_regex_per_name_finds(names: list[str], text: str) -> None:
    found = list(NameIndex(names).mentioned(text))
    assert set(found) == _by_regex(text, names)
    assert len(found) == len(set(found))
