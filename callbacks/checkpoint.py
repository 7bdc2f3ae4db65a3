"""IterationCheckpoint: a Lightning checkpoint every N RL iterations and at the end, written
atomically (temp file, then rename); the previous good one is kept as ``previous.ckpt``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class IterationCheckpoint(Callback):
    def __init__(self, folder: Path, every: int) -> None:
        if every < 0:
            raise ValueError("rl.checkpoint_every must be >= 0")
        self.folder, self.every = Path(folder), every

    @property
    def last(self) -> Path:
        return self.folder / "last.ckpt"

    def save(self, trainer: L.Trainer) -> Path:
        tmp = self.folder / "last.ckpt.tmp"
        if trainer.is_global_zero:
            _remove(tmp)  # a leftover of a run killed while saving
        trainer.strategy.barrier()
        trainer.save_checkpoint(str(tmp))  # rank 0 writes (a folder under FSDP); a collective
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            previous = self.folder / "previous.ckpt"
            if self.last.exists():
                _remove(previous)
                os.replace(self.last, previous)
            os.replace(tmp, self.last)
        trainer.strategy.barrier()
        return self.last

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        it = pl_module.iteration  # completed iterations (the training step counted this one)
        if self.every and it % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class SaveHFModel(Callback):
    """At the end of training, write the policy as a Hugging Face folder (rank 0 writes; under
    FSDP every rank joins the gather, which must happen before the process group is torn down)."""

    def __init__(self, folder: Path, tokenizer) -> None:
        self.folder, self.tokenizer = Path(folder), tokenizer

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from kimi_rl.pipeline import save_policy

        save_policy(pl_module.model, self.tokenizer, self.folder, trainer.is_global_zero)
        trainer.strategy.barrier()
