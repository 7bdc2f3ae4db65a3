"""RL with 2 CPU processes (gloo): DDP and FSDP2, each rank with its own colocated vLLM engine."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow


def run_cli(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "KIMI_RL_CONF": str(Path(__file__).resolve().parents[2] / "conf")}
    cmd = [sys.executable, "-m", "kimi_rl.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_rl_keeps_engines_in_sync(strategy, tiny_model_dir, tmp_path):
    res = run_cli(["train", f"trainer={strategy}", f"model.path={tiny_model_dir}", "sft.enabled=false",
                   "data.levels=[1]", "data.sampler=uniform", "data.train_per_level=60", "data.heldout_per_level=8",
                   "rl.iterations=2", "rl.checkpoint_every=0", "rl.sample_log_every=0", "rl.eval_every=1",
                   "rollout.prompts_per_iteration=4", "rollout.samples_per_prompt=4",
                   "rollout.max_response_tokens=12", "rollout.kv_cache_gib=0.25", "algo.minibatch_size=8",
                   # an untrained model gets reward 0 everywhere: train every group anyway (the losses are compared)
                   "algo.skip_uninformative_groups=false",
                   "eval.samples=1", "eval.max_problems_per_level=4", f"run.dir={tmp_path}", "run.name=dist"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    ea = EventAccumulator(str(tmp_path / "dist" / "tb" / "rl"))
    ea.Reload()
    m = {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
    assert len(m["train/loss"]) == 2 and all(abs(v) < 1e6 for v in m["train/loss"])
    # both ranks' engines hold identical weights after every sync
    assert m["sync/engine_checksum_spread"] == [0.0, 0.0]
    assert len(m["train/engine_logp_error_absmax"]) == 1 and m["train/engine_logp_error_absmax"][0] < 1e-3  # iteration 0
    assert len(m["eval/accuracy"]) == 4  # before, Lightning's validation loop after iterations 1 and 2, after
    assert (tmp_path / "dist" / "final_model" / "config.json").is_file()
    assert (tmp_path / "dist" / "checkpoints" / "last.ckpt").exists()
