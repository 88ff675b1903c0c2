"""Prompt-lookup drafting: the n-gram index proposes what followed the tail before (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.llm.draft import DraftConfig, DraftHistory, PromptLookup


def test_the_longest_match_wins_and_its_continuation_is_proposed() -> None:
    # "7 8" occurs twice; with its preceding 1 only once (followed by 9 10).
    lookup = PromptLookup([1, 7, 8, 9, 10, 2, 7, 8, 11, 12, 1, 7, 8])
    assert lookup.propose(2) == [9, 10]
    # Without 3-grams, the bigram "7 8" matches its latest occurrence (then 11 12).
    bigrams = PromptLookup([1, 7, 8, 9, 10, 2, 7, 8, 11, 12, 1, 7, 8], ngram_max=2)
    assert bigrams.propose(2) == [11, 12]


def test_no_match_and_no_room_propose_nothing() -> None:
    assert PromptLookup([1, 2, 3]).propose(4) == []
    assert PromptLookup([1, 2, 1]).propose(0) == []
    # The tail alone is not a match of itself.
    assert PromptLookup([5]).propose(3) == []


def test_extend_indexes_new_tokens_and_the_limit_caps_the_draft() -> None:
    lookup = PromptLookup([4, 5, 6, 7, 8], ngram_min=2)
    assert lookup.propose(3) == []
    lookup.extend([4, 5])
    assert lookup.propose(3) == [6, 7, 8]
    assert lookup.propose(1) == [6]
    assert lookup.tokens == [4, 5, 6, 7, 8, 4, 5]


def test_a_repeating_run_is_copied_on_through_the_draft() -> None:
    # The latest match of the tail ends right before it: the draft continues the period.
    assert PromptLookup([1, 2, 3, 1, 2, 3, 1, 2]).propose(5) == [3, 1, 2, 3, 1]
    assert PromptLookup([9, 9], short_match_tokens=0).propose(3) == [9, 9, 9]


def test_a_one_token_match_drafts_only_the_short_match_length() -> None:
    # Only the last token (5) occurred before: weak evidence, one token by default.
    tokens = [5, 6, 7, 8, 1, 5]
    assert PromptLookup(tokens).propose(3) == [6]
    assert PromptLookup(tokens, short_match_tokens=2).propose(3) == [6, 7]
    assert PromptLookup(tokens, short_match_tokens=0).propose(3) == [6, 7, 8]
    # A two-token match drafts up to the limit.
    assert PromptLookup([5, 6, 7, 8, 1, 5, 6]).propose(3) == [7, 8, 1]


def test_the_most_frequent_follower_wins_over_the_latest() -> None:
    # "3 4" was followed by 5 twice, then by 9 once (latest): 5 wins, copied from its
    # latest occurrence (5 6 after the second "3 4").
    tokens = [3, 4, 5, 1, 3, 4, 5, 6, 3, 4, 9, 2, 3, 4]
    assert PromptLookup(tokens, ngram_max=2).propose(2) == [5, 6]
    # A tie goes to the latest follower.
    assert PromptLookup([3, 4, 5, 3, 4, 9, 3, 4], ngram_max=2).propose(1) == [9]


def test_n_gram_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="ngram_min"):
        DraftConfig(ngram_min=3, ngram_max=2)
    with pytest.raises(ValueError, match="max_tokens"):
        DraftConfig(max_tokens=-1)
    with pytest.raises(ValueError, match="short_match_tokens"):
        DraftConfig(short_match_tokens=-1)
    with pytest.raises(ValueError, match="history_tokens"):
        DraftConfig(history_tokens=-1)


def test_the_history_chains_the_most_frequent_follower_of_the_longest_match() -> None:
    history = DraftHistory(100, context=2)
    # Two outputs after the same prompt tail (8, 9): "1 2 3 4" twice, "1 2 7" once.
    for output in ([1, 2, 3, 4], [1, 2, 7], [1, 2, 3, 4]):
        history.record([5, 8, 9], output)
    assert len(history) == 3 * 2 + 4 + 3 + 4
    assert history.propose([8, 9], 4) == [1, 2, 3, 4]
    # "9 1 2" was followed by 3 twice and 7 once; nothing ever followed an output's end.
    assert history.match([0, 9, 1, 2]) == 3
    assert history.propose([0, 9, 1, 2], 1) == [3]
    assert (history.match([2, 7]), history.propose([2, 7], 3)) == (0, [])
    assert history.propose([6, 6], 3) == []
    history.clear()
    assert (len(history), history.propose([8, 9], 4)) == (0, [])


def test_the_history_forgets_its_oldest_outputs_beyond_its_capacity() -> None:
    history = DraftHistory(8, context=0)
    history.record([], [1, 2, 3, 4])
    history.record([], [1, 2, 9, 9])
    assert history.propose([1, 2], 1) == [9]  # a tie: the latest sighting
    history.record([], [5, 6, 7])  # 11 tokens > 8: the first output is forgotten
    assert len(history) == 7
    assert history.propose([2], 2) == [9, 9]
    assert history.match([3]) == 0


@given(
    st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=12), min_size=1, max_size=12),
    st.integers(1, 40),
)
def test_the_history_index_is_always_that_of_the_outputs_it_holds(
    outputs: list[list[int]], capacity: int
) -> None:
    history = DraftHistory(capacity, ngram_max=3, context=0)
    for output in outputs:
        history.record([], output)
    held = list(history._held)
    fresh = DraftHistory(10**6, ngram_max=3, context=0)
    for output in held:
        fresh.record([], output)
    # Counts must match exactly (recency serials differ by construction).
    counts = {k: {t: v[0] for t, v in f.items()} for k, f in history._next.items()}
    assert counts == {k: {t: v[0] for t, v in f.items()} for k, f in fresh._next.items()}
    assert len(history) == sum(map(len, held)) <= max(capacity, 0)


def test_a_longer_history_match_drafts_instead_of_the_prompt() -> None:
    history = DraftHistory(100, context=0)
    history.record([], [40, 41, 42, 43, 44])
    # The prompt knows "42" once (followed by 7); history knows "41 42" -> 43 44.
    lookup = PromptLookup([42, 7, 41, 42], history=history)
    assert lookup.propose(2) == [43, 44]
    # An equally long prompt match keeps the prompt's continuation.
    assert PromptLookup([42, 7, 42], history=history).propose(1) == [7]
