"""``kimi-rl bench`` (src/bench/): its settings are the ``bench.*`` config section, and one small run prints both
tables (rollouts with the real vLLM engine, sandboxed executions). Figures only: nothing here times anything."""
from __future__ import annotations

import json

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


def test_a_small_bench_prints_both_tables(capsys, tmp_path):
    out_json = tmp_path / "ceilings.json"
    status = main(["bench", f"run.dir={tmp_path}", f"bench.out={out_json}", "bench.ceiling_prompts=2",
                   "bench.ceiling_samples=2", "bench.ceiling_max_response_tokens=16", "bench.ceiling_rl_iterations=2",
                   "bench.train_rows=2", "bench.train_seq_len=32", "bench.train_steps=1", "bench.target_tokens=300", "bench.max_response_tokens=32", "bench.segment_tokens=8",
                   "bench.prompts_per_iteration=4", "bench.samples_per_prompt=2",
                   "bench.num_layers=1", "bench.threads=1", "bench.sandbox_runs=2", "bench.sandbox_workers=1",
                   "bench.sandbox_backends=[]", f"bench.real_model={tmp_path / 'absent'}", "bench.preload_rounds=0"])
    out = capsys.readouterr().out
    assert "ratio full/partial mean iteration time" in out and "partial (8)" in out
    assert "Sandboxed executions of a trivial Python program (2 runs, 1 workers" in out
    assert status in (0, 1)  # 1 only when a sandbox backend cannot run here; the table says which
    # each stage against its ceiling: figures, not judged; the JSON holds every one of them
    assert "matmul peak: float32" in out and "of the float32 peak" in out and "of the engine alone" in out
    assert "update + reference logp per iteration: packed rows" in out  # the same run with padded rows beside it
    ceilings = json.loads(out_json.read_text())
    assert ceilings["cpu"]["cores"] >= 1 and ceilings["matmul_peak_gflops"]["float32"] > 0
    assert ceilings["model"].startswith("tiny base model")  # no warm-up in this run.dir's cache
    assert ceilings["rollout"]["alone_tokens_per_s"] > 0 and ceilings["rollout"]["buffer_tokens_per_s"] > 0
    assert ceilings["rollout"]["alone_logprobs_tokens_per_s"] > 0 and "with the sampled tokens' log-probs" in out
    it = ceilings["iteration"]
    assert it["iterations_measured"] == 1 and it["iteration_s"] > 0
    assert set(it["stages_s"]) == {"rollout", "scoring", "reference logp", "weight sync", "update",
                                   "other, inside the iteration"}
    assert it["stages_s"]["update"] > 0 and it["stages_s"]["rollout"] > 0
    assert ceilings["dtype"] == "float32" and ceilings["train_rl_minibatch"]["dtype"] == "float32"
    assert ceilings["update_layouts"]["packed_s"] > 0 and ceilings["update_layouts"]["padded_s"] > 0
    assert ceilings["real_model"]["skipped"].endswith("no model folder there (kimi-rl import-smollm2 writes it)")
    assert "real model: skipped (bench.real_model " in out
    assert ceilings["preload"] == {"skipped": "bench.preload_rounds is 0"}  # its child processes: test_preload.py
    assert ceilings["ratios"]["rollout_in_rl_over_engine_alone"] > 0


def test_side_by_side_puts_each_model_in_a_column():
    from kimi_rl.bench.ceilings import side_by_side

    def model(alone, in_rl, step, share, train, iteration):
        return {"train_rl_minibatch": {"tokens_per_s": step}, "rollout": {"alone_tokens_per_s": alone, "prompts": 8, "k": 4},
                "iteration": {"rollout_tokens_per_s": in_rl, "train_tokens_per_s": train, "iteration_s": iteration,
                              "shares": {"rollout": 0.5, "update": 0.25, "reference logp": 0.0}},
                "ratios": {"rollout_in_rl_over_engine_alone": in_rl / alone, "training_in_rl_over_bare_step": train / step,
                           "train_step_share_of_peak": share}, "model": "/x/smollm2"}
    lines = side_by_side(model(5000, 4500, 6000, 0.3, 5400, 20.0), model(140, 133, 90, 0.45, 63, 80.0)).splitlines()
    assert lines[0].split()[-2:] == ["model", "smollm2"] and "8 x 4 | 8 x 4" in lines[0]
    row = dict((line[:46].strip(), line[46:].split()) for line in lines[1:])
    assert row["rollout in RL / engine alone"] == ["0.90x", "0.95x"]
    assert row["training in RL / bare step"] == ["0.90x", "0.70x"]
    assert row["its share of the matmul peak"] == ["30.0%", "45.0%"]
    assert row["rollout / update / reference shares"] == ["50%", "/", "25%", "/", "0%"] * 2


def test_flops_per_token_from_the_shapes():
    """Hand count for hidden 8, 1 layer, 2 heads (1 kv head: head 4), MLP 16, vocab 10, sequence of 3 tokens:
    projections 2 (64 + 2*8*4 + 64 + 3*8*16) = 1152, attention 2*2*8*(3+1)/2 = 64, LM head 2*8*10 = 160."""
    from types import SimpleNamespace

    from kimi_rl.bench.ceilings import forward_flops_per_token

    config = SimpleNamespace(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                             intermediate_size=16, vocab_size=10)
    assert forward_flops_per_token(config, seq_len=3) == 1152 + 64 + 160
