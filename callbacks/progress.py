"""ProgressLog: one line every N steps, on the terminal and in the run's log file (``kimi_rl.runs.log``).

Lightning's progress bar lives on a terminal only (and is absent when stdout is a file); a long run's progress
belongs in ``runs/<name>/kimi-rl.log`` too.
"""
from __future__ import annotations

import time
from typing import Mapping

import lightning as L
from lightning.pytorch.callbacks import Callback

from kimi_rl.runs import log


def format_eta(seconds: float) -> str:
    """``65`` -> ``'1 min 5 s'``; ``3 h`` and more in hours and minutes.

    >>> format_eta(65), format_eta(7260), format_eta(4)
    ('1 min 5 s', '2 h 1 min', '4 s')
    """
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def progress_line(stage: str, done: int, total: int, values: Mapping[str, float], seconds: float,
                  steps_timed: int) -> str:
    """``stage done/total: label value, ..., X s/step, ETA ...`` (values: label -> number).

    >>> progress_line("RL iteration", 3, 10, {"reward": 0.51234}, 30.0, 3)
    'RL iteration 3/10: reward 0.512, 10.0 s/step, ETA 1 min 10 s'
    """
    parts = [f"{label} {value:.3g}" for label, value in values.items()]
    if steps_timed > 0:
        rate = seconds / steps_timed
        parts.append(f"{rate:.1f} s/step")
        if total > done:
            parts.append(f"ETA {format_eta(rate * (total - done))}")
    return f"{stage} {done}/{total}: " + ", ".join(parts)


class ProgressLog(Callback):
    """Every ``every`` steps: ``stage done/total`` with the metrics named in ``keys`` (label -> metric name), the
    time per step and the time left. RL batches (``Iteration``) count iterations and show their own metrics
    (this rank's); other stages count optimizer steps and show what the module logged."""

    def __init__(self, stage: str, total: int, keys: Mapping[str, str], every: int = 1) -> None:
        self.stage, self.total, self.keys, self.every = stage, int(total), dict(keys), max(1, int(every))
        self._t0, self._first = 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._first = int(getattr(pl_module, "iteration", trainer.global_step))  # a resumed run starts later

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        metrics = getattr(batch, "metrics", None)
        if metrics is None:  # optimizer steps: what training_step logged
            done, metrics = trainer.global_step, {k: float(v) for k, v in trainer.callback_metrics.items()}
        else:
            done = int(batch.index) + 1
        if done % self.every and done != self.total:
            return
        values = {label: float(metrics[key]) for label, key in self.keys.items() if key in metrics}
        log(progress_line(self.stage, done, self.total, values, time.perf_counter() - self._t0, done - self._first))
