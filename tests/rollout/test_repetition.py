"""Repeat detection (src/rollout/repetition.py): exact cut positions, windows, non-overlap, settings."""
from __future__ import annotations

import random

import pytest

from kimi_rl.rollout.repetition import RepeatDetector, find_repeat

TEXT = (b"To add 47 and 85, first add the ones: 7 plus 5 is 12, so write 2 and carry 1. Then the tens: "
        b"4 plus 8 is 12, plus the carry makes 13. The sum is 132. Checking by subtraction, 132 minus 85 "
        b"gives 47, which matches the first number, so the answer holds.")


def test_periodic_stream_is_caught_where_the_third_copy_ends() -> None:
    # [1,2,3] copies start at 0, 3, 6: the third ends at 9; no other 3-gram has 3 copies earlier.
    assert find_repeat([1, 2, 3] * 5, ngram=3, count=3, window=100) == 9
    assert find_repeat([9, 9] + [1, 2, 3] * 5, ngram=3, count=3, window=100) == 11
    assert find_repeat([1, 2, 3] * 5, ngram=3, count=6, window=100) is None  # only 5 copies


def test_copies_must_not_overlap() -> None:
    # A run of 7s: non-overlapping 2-grams at 0, 2, 4 -> caught at 6 (overlapping counting would say 4).
    assert find_repeat([7] * 10, ngram=2, count=3, window=100) == 6
    assert find_repeat([7] * 5, ngram=2, count=3, window=100) is None
    # "abab..." with a 4-gram: copies at 0, 4, 8 -> 12.
    assert find_repeat([1, 2] * 8, ngram=4, count=3, window=100) == 12


def test_only_copies_inside_the_window_count() -> None:
    tokens = [1, 2, 1, 2] + list(range(100, 120)) + [1, 2]  # (1,2) starts at 0, 2, 24; L = 26
    assert find_repeat(tokens, ngram=2, count=3, window=26) == 26
    assert find_repeat(tokens, ngram=2, count=3, window=25) is None  # the copy at 0 falls out
    assert find_repeat(tokens, ngram=2, count=2, window=25) == 4  # (1,2) at 0 and 2, window [0, 4)


def test_start_skips_lengths_already_checked() -> None:
    tokens = [1, 2, 3] * 5
    assert find_repeat(tokens, 3, 3, 100, start=8) == 9
    assert find_repeat(tokens, 3, 3, 100, start=9) == 10  # [2,3,1] at 1, 4, 7
    assert find_repeat(tokens, 3, 3, 100, start=15) is None


def test_varied_text_is_not_caught_and_a_looping_tail_is() -> None:
    tokens = list(TEXT)
    assert find_repeat(tokens, ngram=4, count=3, window=64) is None
    loop = list(range(300, 310))  # 10 tokens that the text does not hold
    looped = tokens + loop * 4
    # The loop's first 4-gram has copies at 250, 260, 270: the third ends 2 loops + 4 tokens in.
    assert find_repeat(looped, ngram=4, count=3, window=64) == len(tokens) + 2 * len(loop) + 4
    assert find_repeat(looped, ngram=4, count=3, window=23) is None  # the window cannot hold 3 copies


def _brute_force(tokens: list[int], ngram: int, count: int, window: int) -> int | None:
    """The definition read literally: most non-overlapping copies of the last n-gram in the window (DP)."""
    for length in range(ngram, len(tokens) + 1):
        gram = tokens[length - ngram:length]
        lo = max(0, length - window)
        starts = [s for s in range(lo, length - ngram + 1) if tokens[s:s + ngram] == gram]
        best: list[int] = []  # best[i]: most non-overlapping copies among starts[:i + 1]
        for i, s in enumerate(starts):
            take = 1 + max((best[j] for j in range(i) if starts[j] + ngram <= s), default=0)
            best.append(max(take, best[-1] if best else 0))
        if best and best[-1] >= count:
            return length
    return None


@pytest.mark.parametrize("seed", range(40))
def test_matches_the_definition_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    tokens = [rng.randrange(3) for _ in range(rng.randrange(10, 60))]
    ngram, count = rng.randint(1, 3), rng.randint(2, 5)
    window = rng.randint(ngram * count, 40)
    expected = _brute_force(tokens, ngram, count, window)
    assert find_repeat(tokens, ngram, count, window) == expected
    start = rng.randrange(len(tokens))
    if expected is not None and expected > start:
        assert find_repeat(tokens, ngram, count, window, start=start) == expected


def test_detector_disabled_and_settings_checked() -> None:
    assert RepeatDetector(ngram=0).find([7] * 500) is None
    assert not RepeatDetector().enabled
    assert find_repeat([7] * 500, ngram=0, count=2, window=10) is None
    assert RepeatDetector(ngram=2, count=3, window=6).find([7] * 10) == 6
    with pytest.raises(ValueError, match="repeat_window=10 can never hold"):
        RepeatDetector(ngram=4, count=3, window=10)
    with pytest.raises(ValueError, match="repeat_count must be >= 2"):
        RepeatDetector(ngram=4, count=1, window=10)
    with pytest.raises(ValueError, match="repeat_ngram must be >= 0"):
        RepeatDetector(ngram=-1)
