"""WeightSync: after each iteration's update, push the trained weights into every rank's engine
(in place through vLLM's ``reload_weights``), so the next rollouts come from the new policy.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from kimi_rl.distributed import gather_rank_states
from kimi_rl.rollout.weights import full_state_dict_for_engine


class WeightSync(Callback):
    """``mode``: inplace (load_weights) | rebuild (save a HF folder, restart the engine on it)."""

    def __init__(self, rollout_cb, mode: str = "inplace", check_ranks: bool = True) -> None:
        """``check_ranks``: log the spread of the engines' weight checksums across ranks (0 = in sync)."""
        if mode not in ("inplace", "rebuild"):
            raise ValueError(f"rollout.weight_sync: '{mode}' is not one of inplace, rebuild")
        self.rollout_cb, self.mode, self.check_ranks = rollout_cb, mode, check_ranks
        self.syncs = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed run's policy comes from the checkpoint: the engine must sample from it too."""
        self.sync(trainer, pl_module, {})

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: dict,
                           batch_idx: int) -> None:
        self.sync(trainer, pl_module, batch.setdefault("metrics", {}))

    def sync(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict) -> None:
        t0 = time.perf_counter()
        state = full_state_dict_for_engine(pl_module.model)  # collective under FSDP: every rank calls it
        engine = self.rollout_cb.engine
        engine.wake_up()
        if self.mode == "inplace":
            engine.load_weights(state)
        else:
            self._rebuild(engine, pl_module, state)
        metrics["time/sync_s"] = time.perf_counter() - t0
        if self.check_ranks and trainer.world_size > 1 and hasattr(engine, "weights_checksum"):
            sums = [float(v) for v in gather_rank_states(engine.weights_checksum()).values()]
            metrics["sync/engine_checksum_spread"] = max(sums) - min(sums)
        # the engine stays awake: the next rollout (or held-out eval) uses it before any training, and a
        # level-2 sleep here would discard the weights just loaded; PartialRollout sleeps it after sampling
        self.syncs += 1

    def _rebuild(self, engine, pl_module, state) -> None:
        folder = Path(tempfile.mkdtemp(prefix="kimi_rl_sync_"))
        pl_module.model.save_pretrained(str(folder), state_dict=state)
        self.rollout_cb.tokenizer.save_pretrained(str(folder))
        engine.rebuild(folder)
