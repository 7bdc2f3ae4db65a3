"""``make gpu-check`` on the CPU (``--cpu-smoke``): the script's own steps, files and pass/fail logic, with
a tiny model, so that the run on a lent GPU machine (minutes, rare) does not fail on the script itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_cpu_smoke_writes_a_passing_report(tmp_path):
    env = {**os.environ, "KIMI_RL_CONF": str(Path(__file__).resolve().parents[1] / "conf")}
    res = subprocess.run([sys.executable, "-m", "kimi_rl.gpu_check", "--cpu-smoke", "--skip-resume", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res.returncode == 0 and report["ok"], res.stdout[-3000:] + res.stderr[-3000:]
    assert set(report["steps"]) == {"gpu_tests", "bf16_peak_flops", "parameters", "rl_3_iterations"}
    rl = report["steps"]["rl_3_iterations"]["result"]
    assert len(rl["losses"]) == 3 and rl["ref_logp_error_absmax"] < 1e-4
    assert rl["train_tokens_per_s"] > 0 and rl["rollout_tokens_per_s"] > 0
    assert 0 < report["train_share_of_peak"]
    assert "PASS" in (tmp_path / "out" / "summary.txt").read_text()


def test_without_cuda_it_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    res = subprocess.run([sys.executable, "-m", "kimi_rl.gpu_check"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no CUDA device" in res.stderr
