"""Evaluation metrics: unbiased pass@k, majority vote, response-token statistics, accuracy per level.

torchmetrics Metrics so they sum over DDP ranks; the paper reports pass@1 (and k1.5's token counts).
"""
from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from n samples of which c are correct (Chen et al. 2021):

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

    and 1 when n - c < k (every k-subset holds a correct sample). The product avoids huge binomials.

    >>> [round(pass_at_k(5, 2, k), 9) for k in (1, 2)], pass_at_k(5, 0, 3), pass_at_k(5, 4, 2)
    ([0.4, 0.7], 0.0, 1.0)
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority_answer(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most common non-None answer; ties go to the smallest ``str(answer)`` so the choice does
    not depend on sample order. None when no sample has an answer.

    >>> majority_answer(["7", "5", None, "5", "7"])
    '5'
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min((a for a, n in counts.items() if n == top), key=str)


class PassAtK(Metric):
    """Mean unbiased pass@k over problems; ``update(correct_counts, n)`` per batch of problems."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"PassAtK: k must be >= 1, got {k}")
        self.k = k
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("problems", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct_counts: Sequence[int] | torch.Tensor, n: int | Sequence[int]) -> None:
        counts = [int(c) for c in correct_counts]
        ns = [int(n)] * len(counts) if isinstance(n, int) else [int(x) for x in n]
        if len(ns) != len(counts):
            raise ValueError(f"PassAtK: {len(counts)} correct counts but {len(ns)} sample counts")
        self.total += sum(pass_at_k(m, c, self.k) for m, c in zip(ns, counts))
        self.problems += len(counts)

    def compute(self) -> torch.Tensor:
        return (self.total / self.problems.clamp(min=1)).float()


class MajorityVote(Metric):
    """Share of problems whose most common extracted answer (``majority_answer``) is a correct one.

    ``update(answers, correct)``: per problem, its samples' extracted answers (None: no answer) and
    whether each sample was verified correct. Voting happens on update, so only counts are synced.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("problems", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, answers: Sequence[Sequence[Hashable | None]], correct: Sequence[Sequence[bool]]) -> None:
        if len(answers) != len(correct):
            raise ValueError(f"MajorityVote: {len(answers)} answer lists but {len(correct)} correctness lists")
        for ans, ok in zip(answers, correct):
            if len(ans) != len(ok):
                raise ValueError(f"MajorityVote: a problem has {len(ans)} answers but {len(ok)} flags")
            winner = majority_answer(ans)
            self.correct += int(winner is not None and any(o for a, o in zip(ans, ok) if a == winner))
        self.problems += len(answers)

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.problems.clamp(min=1)


class MeanTokens(Metric):
    """Mean response length in tokens; ``update(lengths)``."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("tokens", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("responses", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, lengths: Sequence[int] | torch.Tensor) -> None:
        lengths = torch.as_tensor(lengths, dtype=torch.float64).flatten()  # [N]
        self.tokens += lengths.sum()
        self.responses += lengths.numel()

    def compute(self) -> torch.Tensor:
        return (self.tokens / self.responses.clamp(min=1)).float()


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile of ``values`` with linear interpolation (``torch.quantile``), 0.0 when empty: the one
    percentile definition of the project (logged response lengths, evaluation's p95, benchmarks).

    >>> quantile([1, 2, 3, 4], 0.5), quantile([10], 0.95), quantile([], 0.95)
    (2.5, 10.0, 0.0)
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile: q must be in [0, 1], got {q}")
    if len(values) == 0:
        return 0.0
    return float(torch.quantile(torch.as_tensor(values, dtype=torch.float64).flatten(), q))


class TokenPercentile(Metric):
    """The ``q``-quantile (default 0.95: p95) of response lengths, linear interpolation; 0 when empty."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, q: float = 0.95, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"TokenPercentile: q must be in [0, 1], got {q}")
        self.q = q
        self.add_state("lengths", [], dist_reduce_fx="cat")

    def update(self, lengths: Sequence[int] | torch.Tensor) -> None:
        self.lengths.append(torch.as_tensor(lengths, dtype=torch.float32).flatten())  # [N]

    def compute(self) -> torch.Tensor:
        lengths = dim_zero_cat(self.lengths) if len(self.lengths) else torch.zeros(0)  # [N_all]
        if lengths.numel() == 0:
            return torch.tensor(0.0)
        return torch.quantile(lengths, self.q)


class PerLevelAccuracy(Metric):
    """Mean correctness per difficulty level: ``update(levels, correct)`` with one entry per sample
    (pass@1 per level) or per problem; ``compute()`` -> ``{"level_<d>": accuracy}`` in level order."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("levels", [], dist_reduce_fx="cat")
        self.add_state("scores", [], dist_reduce_fx="cat")

    def update(self, levels: Sequence[int] | torch.Tensor, correct: Sequence[float] | torch.Tensor) -> None:
        levels = torch.as_tensor(levels, dtype=torch.long).flatten()  # [N]
        correct = torch.as_tensor(correct, dtype=torch.float32).flatten()  # [N]
        if levels.shape != correct.shape:
            raise ValueError(f"PerLevelAccuracy: {levels.numel()} levels but {correct.numel()} scores")
        self.levels.append(levels)
        self.scores.append(correct)

    def compute(self) -> dict[str, torch.Tensor]:
        if not len(self.levels):
            return {}
        levels, scores = dim_zero_cat(self.levels), dim_zero_cat(self.scores)  # [N_all], [N_all]
        return {f"level_{int(lv)}": scores[levels == lv].mean() for lv in torch.unique(levels)}
