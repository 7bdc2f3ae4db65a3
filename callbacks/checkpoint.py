"""IterationCheckpoint: a Lightning checkpoint every N RL iterations, at the end, and at the end of the
iteration during which SIGINT / SIGTERM arrived (then the run stops); written atomically (temp file, then
rename); the previous good one is kept as ``previous.ckpt``.
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from kimi_rl.rollout.weights import save_policy

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Raised after the checkpoint that a SIGINT / SIGTERM asked for: the run ends there, and
    ``run.resume=auto`` continues it. ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after iteration {iteration}; checkpoint {checkpoint}; "
                         f"continue with run.resume=auto")
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        self.exit_code = 128 + signum


class IterationCheckpoint(Callback):
    def __init__(self, folder: Path, every: int) -> None:
        if every < 0:
            raise ValueError("rl.checkpoint_every must be >= 0")
        self.folder, self.every = Path(folder), every
        self.stop_signal: int | None = None
        """The SIGINT / SIGTERM received during training (the run saves and stops at the iteration's end)."""
        self._previous_handlers: dict[int, Any] = {}
        self._announce = True

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

    # -- SIGINT / SIGTERM: save at the end of the iteration, then stop ---------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_signal, self._announce = None, trainer.is_global_zero
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self.stop_signal is not None:  # the second one: stop now, without a checkpoint
            self._restore_handlers()
            raise KeyboardInterrupt
        self.stop_signal = signum
        if self._announce:  # os.write: print() is not safe inside a signal handler
            os.write(2, f"\n[kimi-rl] {signal.Signals(signum).name}: stopping after this iteration with a "
                        f"checkpoint (send it again to stop at once, without one)\n".encode())

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        it = pl_module.iteration  # completed iterations (the training step counted this one)
        # every rank stops at the same iteration, whichever got the signal (a no-op without distribution)
        stop = trainer.strategy.reduce_boolean_decision(self.stop_signal is not None, all=False)
        last = it >= trainer.num_training_batches  # the run ends here anyway, with its final checkpoint and model
        if (self.every and it % self.every == 0) or (stop and not last):
            self.save(trainer)
        if stop and not last:
            self._restore_handlers()
            raise TrainingInterrupted(self.stop_signal or signal.SIGTERM, it, self.last)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        self.save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()


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
        save_policy(pl_module.model, self.tokenizer, self.folder, trainer.is_global_zero)
        trainer.strategy.barrier()
