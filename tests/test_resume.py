"""Exact resume after SIGKILL, and clear errors for bad checkpoints or changed model shapes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kimi_rl.config import ConfigError
from kimi_rl.module import check_model_shape
from kimi_rl.pipeline import check_checkpoint
from tb_scalars import event_scalars

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def cli(args, cwd) -> list[str]:
    return [sys.executable, "-m", "kimi_rl.cli", *args]


def test_truncated_checkpoint_is_a_clear_error_and_previous_survives(tmp_path):
    good = tmp_path / "previous.ckpt"
    torch.save({"state_dict": {}, "kimi_rl": {"iteration": 1}}, good)
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ConfigError, match=r"corrupt or truncated.*previous good checkpoint is .*previous.ckpt"):
        check_checkpoint(bad)
    check_checkpoint(good)
    assert good.is_file()
    torch.save({"weights": 1}, bad)
    with pytest.raises(ConfigError, match="not a Lightning checkpoint"):
        check_checkpoint(bad)


def test_changed_model_shape_names_the_key():
    check_model_shape({"hidden_size": 64}, {"hidden_size": 64})
    with pytest.raises(ConfigError, match=r"model.hidden_size: .*hidden_size=64.*now gives 128"):
        check_model_shape({"hidden_size": 64, "num_hidden_layers": 2}, {"hidden_size": 128, "num_hidden_layers": 2})
    with pytest.raises(ConfigError, match=r"model.num_layers"):
        check_model_shape({"num_hidden_layers": 2}, {"num_hidden_layers": 4})


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    common = ["train", f"model.path={tiny_model_dir}", "sft.enabled=false", "data.levels=[1,2]",
              "data.train_per_level=60", "data.heldout_per_level=6", "rl.iterations=5", "rl.checkpoint_every=1",
              "rl.sample_log_every=0", "rollout.prompts_per_iteration=4", "rollout.samples_per_prompt=4",
              "rollout.max_response_tokens=16", "rollout.segment_tokens=8", "rollout.kv_cache_gib=0.25",
              "algo.minibatch_size=8", "algo.reset_optimizer=false", "eval.samples=1",
              "algo.skip_uninformative_groups=false",  # reward-0 groups still train: losses are compared
              "eval.max_problems_per_level=3", f"run.dir={tmp_path}", "trainer.threads=1"]
    env = {**os.environ, "KIMI_RL_CONF": CONF}
    straight = subprocess.run(cli(common + ["run.name=straight"], tmp_path), cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
    assert straight.returncode == 0, straight.stderr[-4000:]

    ckpts = tmp_path / "killed" / "checkpoints"
    proc = subprocess.Popen(cli(common + ["run.name=killed"], tmp_path), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (ckpts / "previous.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # two checkpoints written (iterations 1 and 2): now inside iteration 3
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpts / "last.ckpt", weights_only=False)["kimi_rl"]["iteration"]
    assert 2 <= killed_at < 5

    resumed = subprocess.run(cli(common + ["run.name=killed", "run.resume=auto"], tmp_path), cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a = event_scalars(tmp_path / "straight" / "tb" / "rl")
    b = event_scalars(tmp_path / "killed" / "tb" / "rl")
    compared = 0
    for tag in ("reward/mean", "response/length_mean", "train/loss", "train/entropy_estimate",
                "rollout/new_tokens", "rollout/buffer_unfinished"):
        for step, value in a[tag].items():  # groups finish every other iteration: not every step has all tags
            if step >= killed_at:
                assert b[tag][step] == pytest.approx(value, abs=1e-4), (tag, step)
                compared += 1
    assert compared >= 8
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["kimi_rl"]["iteration"] == 5
