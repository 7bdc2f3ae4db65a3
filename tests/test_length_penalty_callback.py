"""LengthPenaltySchedule (callbacks/length_penalty.py) through a real Lightning Trainer and checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from kimi_rl.callbacks import LengthPenaltySchedule


class TinyModule(LightningModule):
    """BoringModel-style: one linear layer; records the length weight seen by each training step."""

    def __init__(self, keeps_iteration: bool) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.seen_weights: list[float] = []
        if keeps_iteration:
            self.iteration = 0

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen_weights.append(self.len_reward_weight)
        if hasattr(self, "iteration"):
            self.iteration += 1
        return self.layer(batch[0]).pow(2).mean()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self, "iteration"):
            checkpoint["iteration"] = self.iteration

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self, "iteration"):
            self.iteration = checkpoint["iteration"]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.ones(8, 2)), batch_size=2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(tmp_path: Path, module: TinyModule, callback: LengthPenaltySchedule, epochs: int,
        ckpt_path: Path | None = None) -> Trainer:
    trainer = Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=epochs, limit_train_batches=3,
        logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[callback, ModelCheckpoint(dirpath=tmp_path / f"ckpt{epochs}", save_last=True)],
    )
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


def test_weight_at_is_the_schedule() -> None:
    schedule = LengthPenaltySchedule(weight=0.4, warmup_iterations=1, schedule="linear", ramp_iterations=4)
    assert [schedule.weight_at(t) for t in range(7)] == [0.0, 0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.4]


def test_own_counter_and_resume_from_a_real_checkpoint(tmp_path: Path) -> None:
    callback = LengthPenaltySchedule(weight=0.4, warmup_iterations=1, schedule="linear", ramp_iterations=4)
    module = TinyModule(keeps_iteration=False)
    fit(tmp_path, module, callback, epochs=1)
    assert module.seen_weights == [0.0, 0.0, 0.1]
    ckpt = tmp_path / "ckpt1" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)["callbacks"]
    assert saved[callback.state_key] == {"iteration": 3}

    resumed_callback = LengthPenaltySchedule(weight=0.4, warmup_iterations=1, schedule="linear",
                                             ramp_iterations=4)
    resumed = TinyModule(keeps_iteration=False)
    fit(tmp_path, resumed, resumed_callback, epochs=2, ckpt_path=ckpt)
    assert resumed.seen_weights == pytest.approx([0.2, 0.3, 0.4])  # continues, not restarted at 0
    assert resumed_callback.iteration == 6


def test_reads_the_module_iteration(tmp_path: Path) -> None:
    callback = LengthPenaltySchedule(weight=0.3, warmup_iterations=6)
    module = TinyModule(keeps_iteration=True)
    module.iteration = 5  # e.g. restored by the RL module itself
    fit(tmp_path, module, callback, epochs=1)
    assert module.seen_weights == [0.0, 0.3, 0.3]
    assert callback.iteration == 7  # the module's iteration at the last batch start


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight=-0.1, warmup_iterations=0), "weight .* >= 0"),
    (dict(weight=float("nan"), warmup_iterations=0), "finite"),
    (dict(weight=0.1, warmup_iterations=-1), "warmup_iterations"),
    (dict(weight=0.1, warmup_iterations=1.5), "warmup_iterations"),
    (dict(weight=0.1, warmup_iterations=0, schedule="cosine"), "'cosine' is not one of constant, linear"),
    (dict(weight=0.1, warmup_iterations=0, schedule="linear"), "ramp_iterations .* >= 1"),
])
def test_bad_arguments_fail_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LengthPenaltySchedule(**kwargs)
