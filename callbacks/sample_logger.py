"""SampleLogger: every N iterations, write a few completions with their rewards to TensorBoard."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from kimi_rl.rewards.scoring import decode
from kimi_rl.rl.iteration import Iteration


class SampleLogger(Callback):
    def __init__(self, tokenizer, every: int = 10, groups: int = 2) -> None:
        if every < 0 or groups < 1:
            raise ValueError("SampleLogger: every must be >= 0 and groups >= 1")
        self.tokenizer, self.every, self.groups = tokenizer, every, groups

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Iteration,
                           batch_idx: int) -> None:
        it = batch.index
        if not self.every or it is None or it % self.every or not trainer.is_global_zero or trainer.logger is None:
            return
        groups = batch.rollouts.groups if batch.rollouts is not None else []
        if not groups:
            return
        lines = []
        for g in groups[: self.groups]:
            lines.append(f"### {g.problem.question}  (answer {g.problem.answer})")
            for t in g.trajectories:
                text = decode(self.tokenizer, t.response_ids)
                lines.append(f"- reward {t.reward:+.2f}, {len(t.response_ids)} tokens, {t.finish_reason}:\n\n```\n{text}\n```")
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text"):
            experiment.add_text("samples", "\n\n".join(lines), global_step=it)
