"""Turns k1.5's length reward on after a warm-up (paper section 2.3.3) by setting its weight each iteration.

Follows the paper (0 during warm-up, then constant); a linear ramp after warm-up is offered as well.
"""
from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from kimi_rl.rewards.length import LENGTH_SCHEDULES, length_weight


class LengthPenaltySchedule(Callback):
    """Set ``pl_module.len_reward_weight`` at the start of every RL iteration (training batch).

    Args:
        weight: the length reward's weight once fully on (>= 0).
        warmup_iterations: iterations with the weight at 0.
        schedule: ``constant`` (weight right after warm-up) or ``linear`` (0 to weight over
            ``ramp_iterations``).
        ramp_iterations: length of the linear ramp (>= 1 for ``linear``).

    The iteration is ``pl_module.iteration`` when the module keeps that int; otherwise the
    callback counts training batches itself (one batch = one RL iteration). Either way its
    position is in ``state_dict`` so a resumed run continues the schedule. Place it before the
    rollout callback in ``Trainer(callbacks=...)`` so rewards of an iteration use its weight.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[LengthPenaltySchedule(weight=0.1, warmup_iterations=20)])
    """

    def __init__(self, weight: float, warmup_iterations: int, schedule: str = "constant",
                 ramp_iterations: int = 0) -> None:
        super().__init__()
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"LengthPenaltySchedule: weight (algo.len_reward_weight) must be a finite "
                             f"number >= 0, got {weight!r}")
        if not _is_int(warmup_iterations) or warmup_iterations < 0:
            raise ValueError(f"LengthPenaltySchedule: warmup_iterations (algo.len_warmup_iterations) must "
                             f"be an int >= 0, got {warmup_iterations!r}")
        if schedule not in LENGTH_SCHEDULES:
            raise ValueError(f"LengthPenaltySchedule: schedule (algo.len_schedule) '{schedule}' is not one "
                             f"of {', '.join(LENGTH_SCHEDULES)}")
        least_ramp = 1 if schedule == "linear" else 0
        if not _is_int(ramp_iterations) or ramp_iterations < least_ramp:
            raise ValueError(f"LengthPenaltySchedule: ramp_iterations (algo.len_ramp_iterations) must be an "
                             f"int >= {least_ramp} for schedule '{schedule}', "
                             f"got {ramp_iterations!r}")
        self.weight = float(weight)
        self.warmup_iterations = warmup_iterations
        self.schedule = schedule
        self.ramp_iterations = ramp_iterations
        self.iteration = 0
        """The iteration the schedule is at (the module's, or this callback's own count)."""

    def weight_at(self, iteration: int) -> float:
        """The length reward weight at ``iteration`` (see ``kimi_rl.rewards.length.length_weight``)."""
        return length_weight(iteration, self.weight, self.warmup_iterations, self.schedule,
                             self.ramp_iterations)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        module_iteration = getattr(pl_module, "iteration", None)
        if _is_int(module_iteration):
            self.iteration = module_iteration
        pl_module.len_reward_weight = self.weight_at(self.iteration)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not _is_int(getattr(pl_module, "iteration", None)):
            self.iteration += 1

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.iteration = int(state_dict.get("iteration", 0))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
