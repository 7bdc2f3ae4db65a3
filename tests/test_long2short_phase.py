"""Long2ShortPhase (callbacks/long2short_phase.py): argument checks, callback order, and the switch of a
running RL job through the real Trainer, the hf engine and a real checkpoint (tiny model)."""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kimi_rl.callbacks import IterationCheckpoint, LengthPenaltySchedule, PartialRollout, WeightSync
from kimi_rl.callbacks.long2short_phase import Long2ShortPhase, shortened
from kimi_rl.config import AlgoConfig, DataConfig, ModelConfig, RolloutConfig
from kimi_rl.datamodule import PromptDataModule
from kimi_rl.modeling import load_model, load_tokenizer
from kimi_rl.module import KimiRLModule
from kimi_rl.tasks import TaskData
from kimi_rl.tasks.arithmetic import make_problems


@pytest.mark.parametrize("kwargs, key", [
    ({"at_iteration": -1}, "at_iteration"),
    ({"at_iteration": 1.5}, "at_iteration"),
    ({"at_iteration": True}, "at_iteration"),
    ({"max_response_tokens": 0}, "max_response_tokens"),
    ({"len_reward_weight": -0.1}, "len_reward_weight"),
    ({"len_reward_weight": math.nan}, "len_reward_weight"),
])
def test_bad_arguments_name_the_key(kwargs, key):
    args = {"at_iteration": 3, "max_response_tokens": 16, "len_reward_weight": 0.5, **kwargs}
    with pytest.raises(ValueError, match=f"{key} \\(phase.long2short_{key}\\)"):
        Long2ShortPhase(**args)


def test_in_phase_from_the_iteration_on_and_once_switched():
    phase = Long2ShortPhase(at_iteration=3, max_response_tokens=16, len_reward_weight=0.5)
    assert [phase.in_phase(t) for t in range(5)] == [False, False, False, True, True]
    phase.load_state_dict({"iteration": 1, "switched_at": 1})
    assert phase.switched and phase.in_phase(0)


def test_shortened_lowers_cap_and_segment_never_raises():
    cfg = RolloutConfig(max_response_tokens=320, segment_tokens=100)
    short = shortened(cfg, 64)
    assert (short.max_response_tokens, short.segment_tokens) == (64, 64)
    assert shortened(RolloutConfig(max_response_tokens=320, segment_tokens=32), 64).segment_tokens == 32
    assert shortened(RolloutConfig(max_response_tokens=320), 64).segment_tokens is None
    assert shortened(short, 500) is short  # never raises the cap
    assert cfg.max_response_tokens == 320  # the original config is untouched


def test_callback_order_is_checked():
    rollout = PartialRollout(RolloutConfig(engine="hf"), AlgoConfig(), ModelConfig(), "unused", None, 0, 64)
    schedule = LengthPenaltySchedule(0.0, 0)
    phase = Long2ShortPhase(at_iteration=0, max_response_tokens=8, len_reward_weight=0.5)
    for order, match in [([schedule, rollout, phase], "before PartialRollout"),
                         ([phase, schedule, rollout], "after LengthPenaltySchedule"),
                         ([schedule, phase], "exactly one PartialRollout")]:
        with pytest.raises(ValueError, match=match):
            phase.setup(L.Trainer(callbacks=order, logger=False), None, "fit")
    phase.setup(L.Trainer(callbacks=[schedule, phase, rollout], logger=False), None, "fit")
    assert phase.rollout is rollout


def scalars(folder) -> dict[str, dict[int, float]]:
    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {t: {e.step: e.value for e in ea.Scalars(t)} for t in ea.Tags()["scalars"]}


def fit_rl(model_dir, tmp_path, phase: Long2ShortPhase, epochs: int, ckpt_path=None):
    """Two RL iterations per epoch on 1-digit sums: hf engine, 6 prompts x 4 samples, 12 tokens."""
    train, heldout = make_problems([1], 40, 4, seed=0)
    task = TaskData(train, heldout, "arithmetic")
    from kimi_rl.rewards import VERIFIERS

    tok = load_tokenizer(model_dir)
    rollout_cfg = RolloutConfig(engine="hf", prompts_per_iteration=6, samples_per_prompt=4, max_response_tokens=12)
    algo = AlgoConfig(lr=1e-3, minibatch_size=24)
    rollout = PartialRollout(rollout_cfg, algo, ModelConfig(), model_dir, VERIFIERS.get("arithmetic")(), 0, 64)
    callbacks = [LengthPenaltySchedule(0.1, 0), phase, rollout, WeightSync(rollout),
                 IterationCheckpoint(tmp_path / "ckpt", every=0)]
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=epochs,
                        limit_train_batches=2, callbacks=callbacks, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1,
                        logger=L.pytorch.loggers.TensorBoardLogger(str(tmp_path), name="tb", version="rl"))
    module = KimiRLModule(load_model(model_dir), algo)
    trainer.fit(module, datamodule=PromptDataModule(task, tok, DataConfig(levels=[1]), 0), ckpt_path=ckpt_path,
                weights_only=False)  # the checkpoint holds numpy RNG state
    return rollout


def test_switches_a_running_rl_job_and_resumes_switched(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    phase = Long2ShortPhase(at_iteration=1, max_response_tokens=3, len_reward_weight=0.5)
    rollout = fit_rl(tiny_model_dir, tmp_path, phase, epochs=1)
    m = scalars(tmp_path / "tb" / "rl")
    assert m["phase/long2short"] == {0: 0.0, 1: 1.0}
    assert m["algo/len_reward_weight"] == pytest.approx({0: 0.1, 1: 0.5})  # the schedule's, then the phase's
    assert m["response/length_max"][0] > 3  # a random model rarely stops within 3 characters
    assert m["response/length_max"][1] <= 3
    assert rollout.cfg.max_response_tokens == 3
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["callbacks"]["Long2ShortPhase"]["switched_at"] == 1

    # a fresh callback that would switch only at iteration 50 continues in the phase from the checkpoint
    resumed_phase = Long2ShortPhase(at_iteration=50, max_response_tokens=3, len_reward_weight=0.5)
    resumed = fit_rl(tiny_model_dir, tmp_path / "resumed", resumed_phase, epochs=2, ckpt_path=ckpt)
    m = scalars(tmp_path / "resumed" / "tb" / "rl")
    assert m["phase/long2short"] == {2: 1.0, 3: 1.0}
    assert m["algo/len_reward_weight"] == pytest.approx({2: 0.5, 3: 0.5})
    assert max(m["response/length_max"].values()) <= 3
    assert resumed.cfg.max_response_tokens == 3 and resumed_phase.switched_at == 1
