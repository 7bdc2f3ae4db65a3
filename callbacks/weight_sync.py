"""WeightSync: after each iteration's update, push the trained weights into every rank's engine
(in place through vLLM's ``reload_weights``), so the next rollouts come from the new policy.
"""
from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from kimi_rl.distributed import gather_rank_states
from kimi_rl.rl.iteration import Iteration
from kimi_rl.rollout.weights import full_state_dict_for_engine
from kimi_rl.rollout.worker import RolloutWorker


class WeightSync(Callback):
    """``mode``: inplace (load_weights) | rebuild (save a HF folder, restart the engine on it)."""

    def __init__(self, worker: RolloutWorker, mode: str = "inplace", check_ranks: bool = True) -> None:
        """``check_ranks``: log the spread of the engines' weight checksums across ranks (0 = in sync)."""
        if mode not in ("inplace", "rebuild"):
            raise ValueError(f"rollout.weight_sync: '{mode}' is not one of inplace, rebuild")
        self.worker, self.mode, self.check_ranks = worker, mode, check_ranks
        self.syncs = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed run's policy comes from the checkpoint: the engine must sample from it too."""
        self.sync(trainer, pl_module, {})

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Iteration,
                           batch_idx: int) -> None:
        self.sync(trainer, pl_module, batch.metrics)

    def sync(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict) -> None:
        t0 = time.perf_counter()
        state = full_state_dict_for_engine(pl_module.model)  # collective under FSDP: every rank calls it
        self.worker.load_weights(state, pl_module.model, self.mode)
        metrics["time/sync_s"] = time.perf_counter() - t0
        engine = self.worker.engine
        if self.check_ranks and trainer.world_size > 1 and hasattr(engine, "weights_checksum"):
            sums = [float(v) for v in gather_rank_states(engine.weights_checksum()).values()]
            metrics["sync/engine_checksum_spread"] = max(sums) - min(sums)
        self.syncs += 1
