"""The long2short phase of a running RL job (``phase.long2short_at_iteration``, src/rl/schedule.py): the switch
through the real Trainer, the hf engine and a real checkpoint (tiny model), and a resume that stays switched."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kimi_rl.callbacks import IterationCheckpoint, PartialRollout, WeightSync
from kimi_rl.config import AlgoConfig, DataConfig, ModelConfig, RolloutConfig
from kimi_rl.rl.datamodule import PromptDataModule
from kimi_rl.models.modeling import load_model, load_tokenizer
from kimi_rl.rl.module import KimiRLModule
from kimi_rl.rl.schedule import RecipeSchedule
from kimi_rl.rollout.worker import RolloutWorker
from kimi_rl.tasks import TaskData
from kimi_rl.tasks.arithmetic import make_problems


def scalars(folder) -> dict[str, dict[int, float]]:
    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {t: {e.step: e.value for e in ea.Scalars(t)} for t in ea.Tags()["scalars"]}


def fit_rl(model_dir, tmp_path, at_iteration: int, epochs: int, ckpt_path=None):
    """Two RL iterations per epoch on 1-digit sums: hf engine, 6 prompts x 4 samples, 12 tokens."""
    train, heldout = make_problems([1], 40, 4, seed=0)
    task = TaskData(train, heldout, "arithmetic")
    from kimi_rl.rewards import VERIFIERS

    tok = load_tokenizer(model_dir)
    rollout_cfg = RolloutConfig(engine="hf", prompts_per_iteration=6, samples_per_prompt=4, max_response_tokens=12)
    algo = AlgoConfig(lr=1e-3, minibatch_size=24)
    worker = RolloutWorker(rollout_cfg, ModelConfig(), model_dir, VERIFIERS.get("arithmetic")(), 0, 64)
    schedule = RecipeSchedule(len_reward_weight=0.1, max_response_tokens=12, long2short_at_iteration=at_iteration,
                              long2short_max_response_tokens=3, long2short_len_reward_weight=0.5)
    callbacks = [PartialRollout(worker, schedule), WeightSync(worker), IterationCheckpoint(tmp_path / "ckpt", every=0)]
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=epochs,
                        limit_train_batches=2, callbacks=callbacks, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1,
                        logger=L.pytorch.loggers.TensorBoardLogger(str(tmp_path), name="tb", version="rl"))
    module = KimiRLModule(load_model(model_dir), algo)
    trainer.fit(module, datamodule=PromptDataModule(task, tok, DataConfig(levels=[1]), 0), ckpt_path=ckpt_path,
                weights_only=False)  # the checkpoint holds numpy RNG state
    return worker


def test_switches_a_running_rl_job_and_resumes_switched(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    fit_rl(tiny_model_dir, tmp_path, at_iteration=1, epochs=1)
    m = scalars(tmp_path / "tb" / "rl")
    assert m["phase/long2short"] == {0: 0.0, 1: 1.0}
    assert m["algo/len_reward_weight"] == pytest.approx({0: 0.1, 1: 0.5})  # the length schedule's, then the phase's
    assert m["rollout/max_response_tokens"] == {0: 12.0, 1: 3.0}
    assert m["response/length_max"][0] > 3  # a random model rarely stops within 3 characters
    assert m["response/length_max"][1] <= 3
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["kimi_rl"]["iteration"] == 2  # the schedule's only state

    # the resumed run (iterations 2 and 3) is in the phase from its first iteration: settings_at(2), settings_at(3)
    fit_rl(tiny_model_dir, tmp_path / "resumed", at_iteration=1, epochs=2, ckpt_path=ckpt)
    m = scalars(tmp_path / "resumed" / "tb" / "rl")
    assert m["phase/long2short"] == {2: 1.0, 3: 1.0}
    assert m["algo/len_reward_weight"] == pytest.approx({2: 0.5, 3: 0.5})
    assert max(m["response/length_max"].values()) <= 3


def test_before_the_phase_the_cap_is_the_runs(tiny_model_dir, tmp_path):
    """A phase that starts after the run ends changes nothing: the run's cap and the length schedule's weight."""
    torch.manual_seed(0)
    fit_rl(tiny_model_dir, tmp_path, at_iteration=50, epochs=1)
    m = scalars(tmp_path / "tb" / "rl")
    assert m["phase/long2short"] == {0: 0.0, 1: 0.0}
    assert m["rollout/max_response_tokens"] == {0: 12.0, 1: 12.0}
    assert m["algo/len_reward_weight"] == pytest.approx({0: 0.1, 1: 0.1})
