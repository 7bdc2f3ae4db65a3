"""RL prompt samplers by name (``data.sampler``): uniform, curriculum and prioritized (paper section 2.3.4).

Departs from the paper by a floor on priorities (solved problems still appear) and a prior for unseen problems
(fixed, or the mean observed rate of their level: ``data.priority_prior: null``).
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.distributed as dist

from kimi_rl.config import CurriculumStage, DataConfig
from kimi_rl.registries import SAMPLERS  # noqa: F401  (kimi_rl.rl.sampling.SAMPLERS, as before)
from kimi_rl.tasks.base import UNLABELLED


def priority_weight(success_rate: float, floor: float) -> float:
    """Prioritized sampling weight: ``w_i = max(1 - s_i, floor)``, so P(i) = w_i / sum_j w_j."""
    return max(1.0 - success_rate, floor)


def updated_success_rate(previous: float | None, batch_success: float, momentum: float) -> float:
    """Running success rate: ``s <- m * s + (1 - m) * batch_success``.

    The first observation of a problem (``previous`` None) replaces the prior.
    """
    if previous is None:
        return batch_success
    return momentum * previous + (1.0 - momentum) * batch_success


LEVEL_PRIOR_DEFAULT = 0.5
"""``priority_prior: null``: the prior of a level no problem of which has been seen yet."""


def level_priors(difficulties: Sequence[int], success_rate: dict[int, float], prior: float | None) -> dict[int, float]:
    """Per level, the success rate assumed for its unseen problems.

    ``prior`` given: that value for every level. ``None``: the mean running success rate of the level's seen
    problems, ``(1 / |seen_l|) sum_{i in seen_l} s_i``, or ``LEVEL_PRIOR_DEFAULT`` for a level with none seen.

    >>> level_priors([1, 1, 2, 2, 3], {0: 1.0, 2: 0.25, 3: 0.75}, None)
    {1: 1.0, 2: 0.5, 3: 0.5}
    >>> level_priors([1, 2], {0: 1.0}, 0.3)
    {1: 0.3, 2: 0.3}
    """
    levels = sorted(set(difficulties))
    if prior is not None:
        return {lv: float(prior) for lv in levels}
    sums: dict[int, list[float]] = {}
    for i, s in success_rate.items():
        sums.setdefault(difficulties[i], []).append(s)
    return {lv: sum(sums[lv]) / len(sums[lv]) if lv in sums else LEVEL_PRIOR_DEFAULT for lv in levels}


def stage_at(curriculum: Sequence[CurriculumStage], iteration: int) -> int:
    """Index of the curriculum stage active at ``iteration`` (0-based); the last stage lasts forever."""
    start = 0
    for index, stage in enumerate(curriculum[:-1]):
        start += stage.iterations
        if iteration < start:
            return index
    return max(len(curriculum) - 1, 0)


def weighted_sample(weights: Sequence[float], n: int, rng: random.Random) -> list[int]:
    """``n`` positions drawn with probability proportional to ``weights``, without replacement.

    Successive sampling (Efraimidis-Spirakis keys ``log(u) / w``): each pick has P(i) = w_i / sum
    of the weights not yet picked, so inclusion frequencies follow the weights closely only when
    ``n`` is small next to ``len(weights)``. When ``n`` exceeds the positions, whole weighted
    permutations are chained. Zero-weight positions come after all others, in random order.
    """
    out: list[int] = []
    while len(out) < n and weights:
        keys = [(1, math.log(1.0 - rng.random()) / w) if w > 0 else (0, rng.random()) for w in weights]
        out.extend(heapq.nlargest(n - len(out), range(len(weights)), key=keys.__getitem__))
    return out


@dataclass
class _Pending:
    """Observations of one problem since the last cross-rank merge."""

    base: float | None
    """The success rate before these observations (None: never seen)."""
    total: float = 0.0
    count: int = 0


class PromptSampler:
    """Draws problem indices for RL iterations and keeps each problem's running success rate.

    Subclasses only switch ``use_curriculum`` (pool = the current stage's levels) and
    ``use_priority`` (weights max(1 - s_i, floor) instead of uniform).
    """

    use_curriculum: ClassVar[bool] = False
    use_priority: ClassVar[bool] = False

    def __init__(self, difficulties: Sequence[int], cfg: DataConfig, seed: int) -> None:
        if not difficulties:
            raise ValueError("sampler: no problems to draw from (empty difficulties)")
        self.difficulties = [int(d) for d in difficulties]
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.success_rate: dict[int, float] = {}
        """Running success rate of every problem seen so far (others stand at their level's ``priors()``)."""
        all_problems = [list(range(len(self.difficulties)))]
        self.stages: list[list[int]] = self._stage_pools() if self.use_curriculum else all_problems
        self.iteration = 0
        self._pending: dict[int, _Pending] = {}

    def _stage_pools(self) -> list[list[int]]:
        """Problem indices drawn in each curriculum stage; unlabelled problems (level 0) are in all."""
        present = sorted(set(self.difficulties))
        stages = list(self.cfg.curriculum) or [CurriculumStage()]
        pools = []
        for i, stage in enumerate(stages):
            key = f"data.curriculum[{i}]"
            if i < len(stages) - 1 and stage.iterations < 1:
                raise ValueError(f"{key}.iterations: must be >= 1 (only the last stage may be 0), "
                                 f"got {stage.iterations}")
            missing = sorted(set(stage.levels) - set(present))
            if missing:
                raise ValueError(f"{key}.levels: no problems of level(s) {missing}; levels present: {present} (with "
                                 "other data.levels, set data.curriculum too; data.curriculum=[] is one stage of all)")
            levels = (set(stage.levels) or set(present)) | {UNLABELLED}  # unlabelled rows: every stage
            pools.append([j for j, d in enumerate(self.difficulties) if d in levels])
        return pools

    def stage(self, iteration: int) -> int:
        """Curriculum stage at ``iteration`` (always 0 without a curriculum)."""
        return stage_at(self.cfg.curriculum, iteration) if self.use_curriculum else 0

    def priors(self) -> dict[int, float]:
        """The success rate an unseen problem stands at, per level (``data.priority_prior``)."""
        return level_priors(self.difficulties, self.success_rate, self.cfg.priority_prior)

    def rate(self, index: int, priors: dict[int, float]) -> float:
        """Problem ``index``'s running success rate, or its level's prior while unseen."""
        found = self.success_rate.get(index)
        return priors[self.difficulties[index]] if found is None else found

    def weight(self, index: int, priors: dict[int, float] | None = None) -> float:
        if not self.use_priority:
            return 1.0
        return priority_weight(self.rate(index, priors or self.priors()), self.cfg.priority_floor)

    def draw(self, n: int, iteration: int) -> list[int]:
        """``n`` problem indices for ``iteration``, without replacement when the pool allows."""
        self.iteration = iteration
        pool = self.stages[self.stage(iteration)]
        priors = self.priors() if self.use_priority else {}
        picks = weighted_sample([self.weight(i, priors) for i in pool], n, self.rng)
        return [pool[p] for p in picks]

    def update(self, indices: Sequence[int], success: Sequence[float]) -> None:
        """Fold one batch of success (e.g. a group's mean reward in [0, 1]) into the running rates.

        Repeated indices in one call are averaged first; the rule is ``updated_success_rate``.
        """
        if len(indices) != len(success):
            raise ValueError(f"sampler.update: {len(indices)} indices but {len(success)} success values")
        batch: dict[int, list[float]] = {}
        for i, s in zip(indices, success):
            batch.setdefault(int(i), []).append(float(s))
        for i, values in batch.items():
            pending = self._pending.setdefault(i, _Pending(base=self.success_rate.get(i)))
            pending.total += sum(values)
            pending.count += len(values)
            self.success_rate[i] = updated_success_rate(self.success_rate.get(i), sum(values) / len(values),
                                                        self.cfg.success_rate_momentum)

    def stats(self) -> dict[str, float]:
        """Scalars for logging: mean success rate (unseen problems at the prior), share seen, stage."""
        priors = self.priors()
        rates = [self.rate(i, priors) for i in range(len(self.difficulties))]
        out = {
            "success_rate_mean": sum(rates) / len(rates),
            "seen_frac": len(self.success_rate) / len(rates),
            "stage": float(self.stage(self.iteration)),
        }
        for level in sorted(set(self.difficulties)):
            level_rates = [r for r, d in zip(rates, self.difficulties) if d == level]
            out[f"success_rate_level_{level}"] = sum(level_rates) / len(level_rates)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain Python state: success rates, the last iteration and the RNG state."""
        version, internal, gauss = self.rng.getstate()
        return {
            "success_rate": dict(self.success_rate),
            "iteration": self.iteration,
            "rng_state": [version, list(internal), gauss],
            "num_problems": len(self.difficulties),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_problems", len(self.difficulties)) != len(self.difficulties):
            raise ValueError(f"sampler state is for {state['num_problems']} problems, this data has "
                             f"{len(self.difficulties)}: the problem set changed since the checkpoint")
        self.success_rate = {int(i): float(s) for i, s in state["success_rate"].items()}
        self.iteration = int(state.get("iteration", 0))
        version, internal, gauss = state["rng_state"]
        self.rng.setstate((version, tuple(internal), gauss))
        self._pending = {}


class UniformSampler(PromptSampler):
    """Every problem equally likely."""


class CurriculumSampler(PromptSampler):
    """Uniform within the current stage's difficulty levels (``data.curriculum``)."""

    use_curriculum = True


class PrioritizedSampler(PromptSampler):
    """P(i) proportional to max(1 - s_i, ``data.priority_floor``) over all problems."""

    use_priority = True


class CurriculumPrioritizedSampler(PromptSampler):
    """Prioritized within the current curriculum stage."""

    use_curriculum = True
    use_priority = True


def merge_success_across_ranks(sampler: PromptSampler) -> None:
    """Make every rank's success rates equal after each rank updated its own problems.

    For each problem observed on any rank since the last merge: batch success = (sum over ranks
    of observed successes) / (their count), applied once with ``updated_success_rate`` to the rate
    all ranks shared before (ranks are in sync after the previous merge). One all_reduce of
    per-problem sums and counts; a no-op (pending observations dropped) without torch.distributed.
    Call it on every rank once per iteration, after ``update``.
    """
    pending, sampler._pending = sampler._pending, {}
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    sums = torch.zeros(2, len(sampler.difficulties), dtype=torch.float64)  # [2, P]: success sums, counts
    index = torch.tensor(list(pending), dtype=torch.long)  # [U] problems observed on this rank
    sums[0, index] = torch.tensor([p.total for p in pending.values()], dtype=torch.float64)
    sums[1, index] = torch.tensor([float(p.count) for p in pending.values()], dtype=torch.float64)
    if device is not None:
        sums = sums.to(device)
    dist.all_reduce(sums)
    sums = sums.cpu()
    for i in torch.nonzero(sums[1] > 0).flatten().tolist():
        base = pending[i].base if i in pending else sampler.success_rate.get(i)
        sampler.success_rate[i] = updated_success_rate(base, float(sums[0, i] / sums[1, i]),
                                                       sampler.cfg.success_rate_momentum)
