"""One RL iteration as one object: the training batch every Lightning hook of the iteration sees.

The flow (paper 2.3 / 2.6, ``README.md`` "How one iteration runs"):

1. ``PartialRollout.on_train_batch_start``: ``index`` := the module's iteration, ``settings`` :=
   ``RecipeSchedule.settings_at(index)``, ``rollouts`` := ``RolloutWorker.collect(settings, datamodule)``.
2. ``KimiRLModule.training_step``: the policy update on ``rollouts.batch`` (moved to the module's device).
3. ``WeightSync.on_train_batch_end``: the new weights into the engine; the module logs ``metrics``.

Why the DataLoader yields empty tickets instead of prompts or rollouts: Lightning's fit loop fetches the
next batch before the current training step runs, so anything sampled in the DataLoader would come from the
previous iteration's policy (one update stale) and from sampler weights that miss this iteration's success
rates. Filling the ticket in ``on_train_batch_start`` samples after the previous update and weight sync.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from kimi_rl.rl.schedule import IterationSettings
    from kimi_rl.rollout.worker import Rollouts


@dataclass
class Iteration:
    """The batch of one RL iteration; filled by the rollout callback, read by the module and the loggers."""

    ticket: int
    """The DataLoader's count of batches fetched (Lightning's; the module's ``iteration`` is the truth)."""
    index: Optional[int] = None
    """The iteration's number = the policy version that samples it (set by the rollout callback)."""
    settings: Optional["IterationSettings"] = None
    rollouts: Optional["Rollouts"] = None
    started_at: Optional[float] = None
    """``time.perf_counter()`` when the rollout callback took the ticket (``time/iteration_s`` runs from it)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Scalars of the iteration from every stage (rollout, update, weight sync), logged once at its end."""
