"""PartialRollout: the Lightning adapter of the rollout worker (paper 2.6.2).

At the start of each RL iteration (training batch) it fills the ``Iteration`` ticket: the iteration's
settings from the pure ``RecipeSchedule`` (length-reward weight, response cap, long2short phase) and its
rollouts from ``RolloutWorker.collect``. With ``segment_tokens`` null every trajectory runs to the end in one
call, i.e. ordinary full rollouts. It owns the worker's lifecycle (setup, teardown) and its checkpoint state.
"""
from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from kimi_rl.distributed import gather_rank_states, pick_rank_state
from kimi_rl.rl.iteration import Iteration
from kimi_rl.rl.schedule import RecipeSchedule
from kimi_rl.rollout.worker import RolloutWorker


class PartialRollout(Callback):
    """Fills ``batch.settings`` and ``batch.rollouts`` of each iteration; ``schedule`` defaults to the worker's
    rollout config with no length reward and no long2short phase."""

    def __init__(self, worker: RolloutWorker, schedule: RecipeSchedule | None = None) -> None:
        self.worker = worker
        self.schedule = schedule or RecipeSchedule(max_response_tokens=worker.cfg.max_response_tokens,
                                                   segment_tokens=worker.cfg.segment_tokens)

    # -- lifecycle -------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.worker.open(trainer.global_rank, str(trainer.strategy.root_device),
                         getattr(pl_module.model, "config", None))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.worker.close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A failed fit skips ``teardown``: close the engine anyway (its memory, the process group it made)."""
        self.worker.close()

    # -- one iteration ---------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Iteration,
                             batch_idx: int) -> None:
        batch.started_at = time.perf_counter()
        last_end = getattr(pl_module, "last_iteration_end", None)
        if last_end is not None:  # Lightning's loop, logging, checkpoints, evaluations since the last iteration
            batch.metrics["time/between_iterations_s"] = batch.started_at - last_end
        batch.index = pl_module.iteration
        batch.settings = self.schedule.settings_at(batch.index)
        batch.rollouts = self.worker.collect(batch.settings, trainer.datamodule)
        batch.metrics.update(batch.settings.metrics())
        batch.metrics.update(batch.rollouts.metrics)
        self._log_difficulty_histogram(trainer, batch)

    @staticmethod
    def _log_difficulty_histogram(trainer: L.Trainer, batch: Iteration) -> None:
        """Rank 0's drawn difficulty levels as a TensorBoard histogram (``data/sampled_difficulty``)."""
        experiment = getattr(trainer.logger, "experiment", None) if trainer.is_global_zero else None
        problems = batch.rollouts.problems
        if problems and hasattr(experiment, "add_histogram"):
            levels = torch.tensor([float(p.difficulty) for p in problems])  # [P]
            experiment.add_histogram("data/sampled_difficulty", levels, global_step=batch.index)

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every rank's buffer and engine sample stream, keyed by rank (Lightning saves rank 0's dict)."""
        return {"ranks": gather_rank_states(self.worker.state_dict())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pick_rank_state(state_dict["ranks"], self.worker.load_state_dict)
