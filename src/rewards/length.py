"""k1.5's length reward (paper section 2.3.3) and the weight schedule it is added with.

Follows the paper; the optional linear ramp of the weight after warm-up is our addition.
"""
from __future__ import annotations

from typing import Sequence

LENGTH_SCHEDULES = ("constant", "linear")


def len_reward(lengths: Sequence[int], correct: Sequence[bool]) -> list[float]:
    """Length reward of one prompt's k samples (added to the task reward with a weight).

        lam_i = 0.5 - (len_i - min_len) / (max_len - min_len)
        len_reward_i = lam_i if correct_i else min(0, lam_i)

    and 0 for every sample when max_len == min_len. The shortest sample gets lam = 0.5, the
    longest -0.5: short correct answers are promoted, long answers (right or wrong) penalised,
    and short wrong answers are never rewarded.

    >>> len_reward([10, 20, 30], [True, True, False])
    [0.5, 0.0, -0.5]
    >>> len_reward([10, 14, 30], [False, False, True])
    [0.0, 0.0, -0.5]
    >>> len_reward([7, 7], [True, False])
    [0.0, 0.0]
    """
    if len(lengths) != len(correct):
        raise ValueError(f"len_reward: {len(lengths)} lengths but {len(correct)} correctness flags")
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    lams = [0.5 - (n - lo) / (hi - lo) for n in lengths]
    return [lam if ok else min(0.0, lam) for lam, ok in zip(lams, correct)]


def length_weight(iteration: int, weight: float, warmup_iterations: int, schedule: str = "constant",
                  ramp_iterations: int = 0) -> float:
    """Weight of the length reward at RL ``iteration`` (0-based).

        w(t) = 0                                          t < warmup
        w(t) = weight                                     constant
        w(t) = weight * min(1, (t - warmup) / ramp)       linear (0 at the first post-warm-up iteration)

    >>> [length_weight(t, 0.4, 2, "linear", 4) for t in range(8)]
    [0.0, 0.0, 0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.4]
    """
    if schedule not in LENGTH_SCHEDULES:
        raise ValueError(f"length schedule '{schedule}' is not one of {', '.join(LENGTH_SCHEDULES)}")
    if schedule == "linear" and ramp_iterations < 1:
        raise ValueError(f"length schedule 'linear' needs ramp_iterations >= 1, got {ramp_iterations}")
    if iteration < warmup_iterations:
        return 0.0
    if schedule == "constant":
        return float(weight)
    return float(weight) * min(1.0, (iteration - warmup_iterations) / ramp_iterations)
