"""Repeat detection: stop a trajectory whose recent output repeats one n-gram many times (paper section 2.6.2).

The paper gives no rule; ours counts non-overlapping copies of the newest n-gram in a window of recent tokens.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Optional, Sequence


def find_repeat(tokens: Sequence[int], ngram: int, count: int, window: int, start: int = 0) -> Optional[int]:
    """Smallest length ``L`` at which the trajectory ``tokens[:L]`` is caught repeating; None when never.

    ``tokens[:L]`` is caught when its last n-gram ``g = tokens[L - ngram:L]`` occurs at least
    ``count`` times, **non-overlapping**, wholly inside its last ``window`` tokens
    ``tokens[max(0, L - window):L]`` (the copy ending at ``L`` counts). Non-overlapping means the
    copies cover ``ngram * count`` tokens, so a run of one token ``a a a ...`` with ``ngram=3``
    needs ``3 * count`` tokens, not ``count + 2``; a ``window`` under ``ngram * count`` never
    triggers. Copies are counted greedily from the right (the latest copy ending at or before the
    previous copy's start), which yields the largest number of non-overlapping copies.

    ``start``: only lengths ``L > start`` are examined, for a trajectory whose prefix
    ``tokens[:start]`` was checked before (the call then costs O((len - start + window) * count)).
    ``ngram <= 0`` disables detection (None).

    >>> find_repeat([5, 1, 2, 1, 2, 1, 2, 9], ngram=2, count=3, window=100)
    7
    """
    if ngram <= 0:
        return None
    if count < 1 or window < 1 or start < 0:
        raise ValueError(f"find_repeat: count ({count}) and window ({window}) must be >= 1, "
                         f"start ({start}) >= 0")
    first = max(ngram, start + 1)  # smallest L examined
    begin = max(0, first - window)  # a copy starting before this lies outside every examined window
    positions: dict[tuple[int, ...], list[int]] = {}  # n-gram -> its start positions (ascending)
    previous: list[int] = []  # previous[s - begin]: latest copy of the same n-gram ending <= s, or -1
    for s in range(begin, len(tokens) - ngram + 1):
        copies = positions.setdefault(tuple(tokens[s:s + ngram]), [])
        i = bisect_right(copies, s - ngram) - 1
        previous.append(copies[i] if i >= 0 else -1)
        copies.append(s)
        length = s + ngram
        if length < first:
            continue
        lowest = max(0, length - window)
        found, p = 1, s
        while found < count:
            p = previous[p - begin]
            if p < lowest:
                break
            found += 1
        if found >= count:
            return length
    return None


@dataclass(frozen=True)
class RepeatDetector:
    """The ``rollout.repeat_*`` settings; ``ngram = 0`` disables detection.

    Example::

        >>> RepeatDetector(ngram=2, count=3, window=100).find([5, 1, 2, 1, 2, 1, 2, 9])
        7
    """

    ngram: int = 0
    """n-gram size (``rollout.repeat_ngram``); 0 disables."""
    count: int = 8
    """Non-overlapping copies of the newest n-gram that stop a trajectory (``rollout.repeat_count``)."""
    window: int = 128
    """Recent tokens inspected (``rollout.repeat_window``)."""

    def __post_init__(self) -> None:
        if self.ngram < 0:
            raise ValueError(f"rollout.repeat_ngram must be >= 0 (0 disables), got {self.ngram}")
        if self.enabled and self.count < 2:
            raise ValueError(f"rollout.repeat_count must be >= 2, got {self.count}")
        if self.enabled and self.window < self.ngram * self.count:
            raise ValueError(f"rollout.repeat_window={self.window} can never hold rollout.repeat_count="
                             f"{self.count} copies of a rollout.repeat_ngram={self.ngram}-gram: make it "
                             f">= {self.ngram * self.count}")

    @property
    def enabled(self) -> bool:
        return self.ngram > 0

    def find(self, tokens: Sequence[int], start: int = 0) -> Optional[int]:
        """``find_repeat`` with these settings: the length to cut ``tokens`` at, or None."""
        if not self.enabled:
            return None
        return find_repeat(tokens, self.ngram, self.count, self.window, start=start)
