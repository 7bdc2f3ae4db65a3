"""Switches a running RL job to long2short RL (paper section 2.4) at a given iteration.

From that iteration on the length reward is on at a fixed weight and responses are capped at a much
smaller ``max_response_tokens``; the paper runs long2short RL as a separate phase, here it can also
continue the same job (same optimizer, sampler and buffer).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from kimi_rl.callbacks.length_penalty import LengthPenaltySchedule
from kimi_rl.callbacks.partial_rollout import PartialRollout
from kimi_rl.config import RolloutConfig


def shortened(cfg: RolloutConfig, max_response_tokens: int) -> RolloutConfig:
    """``cfg`` with the response cap lowered to ``max_response_tokens`` (never raised); a partial-rollout
    ``segment_tokens`` above the new cap is lowered with it, so the config stays valid."""
    cap = min(cfg.max_response_tokens, max_response_tokens)
    segment = None if cfg.segment_tokens is None else min(cfg.segment_tokens, cap)
    if cap == cfg.max_response_tokens and segment == cfg.segment_tokens:
        return cfg
    return dataclasses.replace(cfg, max_response_tokens=cap, segment_tokens=segment)


class Long2ShortPhase(Callback):
    """At iteration ``at_iteration`` switch to long2short RL; stays switched to the end of the run.

    Args:
        at_iteration: first iteration of the phase (``phase.long2short_at_iteration``), an int >= 0.
        max_response_tokens: the phase's response cap (``phase.long2short_max_response_tokens``).
        len_reward_weight: the phase's length reward weight, on from its first iteration
            (``phase.long2short_len_reward_weight``).

    Each iteration of the phase it sets ``pl_module.len_reward_weight`` and lowers the rollout
    callback's ``cfg.max_response_tokens``. Order matters and is checked at setup:
    ``Trainer(callbacks=[LengthPenaltySchedule(...), Long2ShortPhase(...), PartialRollout(...), ...])``
    -- after the schedule (which it overrides) and before the rollout (which reads both). It adds
    ``phase/long2short`` (0/1) to ``batch["metrics"]``; ``state_dict`` keeps whether (and when) it
    switched, so a resumed run stays in the phase.
    """

    def __init__(self, at_iteration: int, max_response_tokens: int, len_reward_weight: float) -> None:
        super().__init__()
        if not _is_int(at_iteration) or at_iteration < 0:
            raise ValueError(f"Long2ShortPhase: at_iteration (phase.long2short_at_iteration) must be an int "
                             f">= 0, got {at_iteration!r}")
        if not _is_int(max_response_tokens) or max_response_tokens < 1:
            raise ValueError(f"Long2ShortPhase: max_response_tokens (phase.long2short_max_response_tokens) "
                             f"must be an int >= 1, got {max_response_tokens!r}")
        if (not isinstance(len_reward_weight, (int, float)) or isinstance(len_reward_weight, bool)
                or not math.isfinite(len_reward_weight) or len_reward_weight < 0):
            raise ValueError(f"Long2ShortPhase: len_reward_weight (phase.long2short_len_reward_weight) must "
                             f"be a finite number >= 0, got {len_reward_weight!r}")
        self.at_iteration = at_iteration
        self.max_response_tokens = max_response_tokens
        self.len_reward_weight = float(len_reward_weight)
        self.iteration = 0
        """The iteration the run is at (the module's, or this callback's own count)."""
        self.switched_at: Optional[int] = None
        """The iteration the phase began, once it has (None before)."""
        self.rollout: Optional[PartialRollout] = None

    @property
    def switched(self) -> bool:
        return self.switched_at is not None

    def in_phase(self, iteration: int) -> bool:
        """Whether ``iteration`` is a long2short iteration: from ``at_iteration`` on, or once switched."""
        return self.switched or iteration >= self.at_iteration

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.rollout = _check_order(trainer.callbacks, self)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        module_iteration = getattr(pl_module, "iteration", None)
        if _is_int(module_iteration):
            self.iteration = module_iteration
        active = self.in_phase(self.iteration)
        if active:
            if not self.switched:
                self.switched_at = self.iteration
            pl_module.len_reward_weight = self.len_reward_weight
            self.rollout.cfg = shortened(self.rollout.cfg, self.max_response_tokens)
        batch.setdefault("metrics", {})["phase/long2short"] = float(active)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not _is_int(getattr(pl_module, "iteration", None)):
            self.iteration += 1

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "switched_at": self.switched_at}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.iteration = int(state_dict.get("iteration", 0))
        at = state_dict.get("switched_at")
        self.switched_at = None if at is None else int(at)


def _check_order(callbacks: list[Callback], phase: Long2ShortPhase) -> PartialRollout:
    """The rollout callback the phase shortens; raises unless the order is schedule < phase < rollout."""
    names = [type(cb).__name__ for cb in callbacks]
    where = {id(cb): i for i, cb in enumerate(callbacks)}
    rollouts = [cb for cb in callbacks if isinstance(cb, PartialRollout)]
    if len(rollouts) != 1:
        raise ValueError(f"Long2ShortPhase needs exactly one PartialRollout callback in the Trainer; "
                         f"callbacks are {names}")
    rollout = rollouts[0]
    me = where[id(phase)]
    if where[id(rollout)] < me:
        raise ValueError(f"Long2ShortPhase must come before PartialRollout in Trainer(callbacks=...) so "
                         f"the iteration's rollout uses the phase's settings; callbacks are {names}")
    late = [cb for cb in callbacks if isinstance(cb, LengthPenaltySchedule) and where[id(cb)] > me]
    if late:
        raise ValueError(f"Long2ShortPhase must come after LengthPenaltySchedule in Trainer(callbacks=...) "
                         f"or the schedule overwrites the phase's length weight; callbacks are {names}")
    return rollout


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
