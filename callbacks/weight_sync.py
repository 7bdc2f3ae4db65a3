"""WeightSync: after each iteration's update, push the trained weights into every rank's engine
(in place through vLLM's ``reload_weights``), so the next rollouts come from the new policy.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from kimi_rl.rollout.weights import full_state_dict_for_engine


class WeightSync(Callback):
    """``mode``: inplace (load_weights) | rebuild (save a HF folder, restart the engine on it)."""

    def __init__(self, rollout_cb, mode: str = "inplace") -> None:
        if mode not in ("inplace", "rebuild"):
            raise ValueError(f"rollout.weight_sync: '{mode}' is not one of inplace, rebuild")
        self.rollout_cb, self.mode = rollout_cb, mode
        self.syncs = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: dict,
                           batch_idx: int) -> None:
        t0 = time.perf_counter()
        state = full_state_dict_for_engine(pl_module.model)  # collective under FSDP: every rank calls it
        engine = self.rollout_cb.engine
        engine.wake_up()
        if self.mode == "inplace":
            engine.load_weights(state)
        else:
            self._rebuild(engine, pl_module, state)
        engine.sleep()
        self.syncs += 1
        batch.setdefault("metrics", {})["time/sync_s"] = time.perf_counter() - t0

    def _rebuild(self, engine, pl_module, state) -> None:
        folder = Path(tempfile.mkdtemp(prefix="kimi_rl_sync_"))
        pl_module.model.save_pretrained(str(folder), state_dict=state)
        self.rollout_cb.tokenizer.save_pretrained(str(folder))
        engine.rebuild(folder)
