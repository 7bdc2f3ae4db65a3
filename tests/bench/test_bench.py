"""``kimi-rl bench`` (src/bench/): its settings are the ``bench.*`` config section, and one small run prints both
tables (rollouts with the real vLLM engine, sandboxed executions). Figures only: nothing here times anything."""
from __future__ import annotations

import pytest

from kimi_rl.cli import main
from kimi_rl.config import ConfigError
from kimi_rl.config.loader import load_config


def test_bench_keys_are_a_section_of_the_one_config():
    opts = load_config(["bench.segment_tokens=16", "bench.sandbox_backends=[rlimit]"]).bench
    assert (opts.segment_tokens, opts.max_response_tokens, opts.sandbox_backends) == (16, 256, ["rlimit"])
    with pytest.raises(ConfigError, match="bench.segment_tokens: 999 is more than bench.max_response_tokens=256"):
        load_config(["bench.segment_tokens=999"])
    with pytest.raises(ConfigError, match="bench.eos_prob: must be in"):
        load_config(["bench.eos_prob=1.5"])
    with pytest.raises(ConfigError, match="unknown key 'bench.runs'"):
        load_config(["bench.runs=3"])


def test_a_small_bench_prints_both_tables(capsys):
    status = main(["bench", "bench.target_tokens=300", "bench.max_response_tokens=32", "bench.segment_tokens=8",
                   "bench.prompts_per_iteration=4", "bench.samples_per_prompt=2",
                   "bench.num_layers=1", "bench.threads=1", "bench.sandbox_runs=2", "bench.sandbox_workers=1",
                   "bench.sandbox_backends=[]"])
    out = capsys.readouterr().out
    assert "ratio full/partial mean iteration time" in out and "partial (8)" in out
    assert "Sandboxed executions of a trivial Python program (2 runs, 1 workers" in out
    assert status in (0, 1)  # 1 only when a sandbox backend cannot run here; the table says which
