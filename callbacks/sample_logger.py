"""SampleLogger: every N iterations, write a few completions with their rewards to TensorBoard."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class SampleLogger(Callback):
    def __init__(self, every: int = 10, groups: int = 2) -> None:
        if every < 0 or groups < 1:
            raise ValueError("SampleLogger: every must be >= 0 and groups >= 1")
        self.every, self.groups = every, groups

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: dict,
                           batch_idx: int) -> None:
        it = pl_module.iteration - 1  # the iteration just done (the training step counted it)
        if not self.every or it % self.every or not trainer.is_global_zero or trainer.logger is None:
            return
        groups = batch.get("groups") or []
        tok = trainer.callbacks and next((c.tokenizer for c in trainer.callbacks if hasattr(c, "buffer")), None)
        if not groups or tok is None:
            return
        lines = []
        for g in groups[: self.groups]:
            lines.append(f"### {g.problem.question}  (answer {g.problem.answer})")
            for t in g.trajectories:
                text = tok.decode(t.response_ids, skip_special_tokens=True)
                lines.append(f"- reward {t.reward:+.2f}, {len(t.response_ids)} tokens, {t.finish_reason}:\n\n```\n{text}\n```")
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text"):
            experiment.add_text("samples", "\n\n".join(lines), global_step=it)
