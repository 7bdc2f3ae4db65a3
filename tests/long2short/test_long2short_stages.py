"""Long2short stages (src/long2short/stages.py, data.py, report.py) and the
``kimi-rl merge`` / ``long2short`` commands, on tiny models with the hf engine."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from kimi_rl.cli import main as cli_main
from kimi_rl.config import Config, ConfigError, DataConfig, ModelConfig, TrainerConfig
from kimi_rl.long2short.methods import shortest_rejection_sampling
from kimi_rl.long2short.data import (ResponseStream, response_examples, sample_scored,
                                     write_jsonl)
from kimi_rl.long2short.stages import (Long2ShortConfig, long2short_rl_config, pick_problems, run_long2short,
                                       run_rows_sft)
from kimi_rl.models.modeling import build_tiny_model, load_model, load_tokenizer
from kimi_rl.rewards import VERIFIERS
from kimi_rl.runs import mark_done
from kimi_rl.sft import collate, response_nll
from kimi_rl.tasks.base import Problem


@pytest.fixture()
def parity_verifier():
    """Correct when the response has an even number of characters, never for problems answered 'never'."""

    def factory(**_):
        return lambda responses, problems: [float(p.answer != "never" and len(r) % 2 == 0)
                                            for r, p in zip(responses, problems)]

    VERIFIERS.register("parity_l2s_test", factory)
    yield "parity_l2s_test"
    VERIFIERS.unregister("parity_l2s_test")


def hf_config(model_dir, tmp_path, **sections) -> Config:
    cfg = Config()
    cfg.run = dataclasses.replace(cfg.run, dir=str(tmp_path), name="run")
    cfg.model = dataclasses.replace(cfg.model, path=str(model_dir))
    cfg.trainer = TrainerConfig(accelerator="cpu", threads=1)
    cfg.rollout = dataclasses.replace(cfg.rollout, engine="hf", max_response_tokens=150)
    for name, changes in sections.items():
        setattr(cfg, name, dataclasses.replace(getattr(cfg, name), **changes))
    return cfg


# ---------------------------------------------------------------- options and data files


def test_long2short_keys_are_a_section_of_the_one_config():
    from kimi_rl.config.loader import load_config

    cfg = load_config(["rl.iterations=3", "long2short.problems=5", "long2short.methods=[merge,dpo]"])
    opts = cfg.long2short
    assert cfg.rl.iterations == 3 and (opts.problems, opts.methods, opts.samples_per_problem) == (5, ["merge", "dpo"], 8)
    with pytest.raises(ConfigError, match="valid keys here: long2short.methods"):
        load_config(["long2short.nope=1"])
    with pytest.raises(ConfigError, match="'long2short.dpo_steps': Value 'x'"):
        load_config(["long2short.dpo_steps=x"])
    with pytest.raises(ConfigError, match="long2short.methods: \\['srs'\\] is not a list of merge"):
        load_config(["long2short.methods=[srs]"])
    with pytest.raises(ConfigError, match="long2short.dpo_ratio: must be > 1"):
        Long2ShortConfig(dpo_ratio=1.0)


def test_write_jsonl_writes_one_object_per_line_atomically(tmp_path):
    rows = [{"uid": "a", "question": "1+1=", "response": "2"}, {"uid": "b", "question": "é", "response": "x"}]
    path = write_jsonl(rows, tmp_path / "sub" / "rows.jsonl")
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows
    assert "é" in path.read_text(encoding="utf-8") and not list(path.parent.glob("*.tmp"))


def test_response_examples_and_stream_batches(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    rows = [{"question": "1+2=", "response": "3"}, {"question": "4+4=", "response": "so 8"}]
    examples = response_examples(rows, tok, DataConfig())
    assert examples[0] == (tok("1+2=")["input_ids"], tok("3", add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    batch = next(iter(ResponseStream(examples, tok.pad_token_id, tokens_per_step=64, seed=0)))
    assert batch["loss_mask"].sum() == 2 + 5  # the two responses with their eos, no prompt token
    with pytest.raises(ValueError, match="over tokens_per_step=8"):
        ResponseStream(examples, tok.pad_token_id, tokens_per_step=8, seed=0)
    with pytest.raises(ValueError, match="no examples"):
        ResponseStream([], tok.pad_token_id, tokens_per_step=64, seed=0)


def test_pick_problems_is_seeded_and_capped():
    problems = [Problem(uid=str(i), question="q", answer="a") for i in range(10)]
    assert pick_problems(problems, 4, seed=1) == pick_problems(problems, 4, seed=1)
    assert len({p.uid for p in pick_problems(problems, 4, seed=1)}) == 4
    assert len(pick_problems(problems, 50, seed=1)) == 10


# ---------------------------------------------------------------- shortest rejection sampling + SFT


def test_shortest_rejection_sampling_keeps_shortest_correct_and_counts_skipped(tiny_model_dir, tmp_path,
                                                                           parity_verifier):
    cfg = hf_config(tiny_model_dir, tmp_path)
    problems = [Problem(uid=f"p{i}", question=f"{i}+1=", answer="never" if i < 2 else str(i + 1), difficulty=1)
                for i in range(4)]
    # room to end: the untrained model stops with p ~ 1/100 per token, and a cut response is wrong
    samples = sample_scored(tiny_model_dir, problems, cfg, parity_verifier, 4, 1.0, 400)
    srs = shortest_rejection_sampling(problems, samples)
    for row in srs.rows:
        i = int(row["uid"][1:])
        correct = [s for s in samples[i] if s.correct]
        assert row["response"] == min(correct, key=lambda s: s.num_tokens).response
        assert len(row["response"]) % 2 == 0
    assert srs.skipped_no_correct == sum(not any(s.correct for s in ss) for ss in samples) >= 2
    assert {r["uid"] for r in srs.rows}.isdisjoint({"p0", "p1"}) and len(srs.rows) >= 1


def test_rows_sft_lowers_response_loss_and_writes_model(tiny_model_dir, tmp_path):
    cfg = hf_config(tiny_model_dir, tmp_path)
    rows = [{"uid": str(i), "question": f"{i}+{i}=", "response": f"\\boxed{{{2 * i}}}"} for i in range(10)]
    tok = load_tokenizer(tiny_model_dir)
    batch = collate(response_examples(rows, tok, cfg.data), tok.pad_token_id)

    def loss(model) -> float:
        with torch.no_grad():
            return float(response_nll(model(input_ids=batch["input_ids"]).logits, batch["input_ids"],
                                      batch["loss_mask"]))

    out = run_rows_sft(tiny_model_dir, rows, tmp_path / "sft_model", cfg, tmp_path, steps=12, lr=3e-3,
                       tokens_per_step=512)
    assert loss(load_model(out)) < loss(load_model(tiny_model_dir)) - 1.0
    assert (tmp_path / "tb" / "sft").is_dir()


# ---------------------------------------------------------------- commands


def scalars(folder) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_merge_command_writes_average_and_names_mismatching_tensor(tmp_path, capsys):
    small = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64,
                 max_position_embeddings=64)
    a = build_tiny_model(ModelConfig(**small), tmp_path / "a", seed=1)
    b = build_tiny_model(ModelConfig(**small), tmp_path / "b", seed=2)
    wide = build_tiny_model(ModelConfig(**{**small, "intermediate_size": 96}), tmp_path / "wide", seed=3)
    assert cli_main(["merge", str(a), str(b), str(tmp_path / "out"), "0.25"]) == 0
    wa, wb = load_model(a).state_dict(), load_model(b).state_dict()
    merged = load_model(tmp_path / "out").state_dict()
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(merged[key], 0.25 * wa[key] + 0.75 * wb[key], atol=1e-7)
    assert cli_main(["merge", str(a), str(wide), str(tmp_path / "bad")]) == 2
    assert "tensor 'model.layers.0.mlp.down_proj.weight' has shape (32, 64) in the first" in capsys.readouterr().err
    assert cli_main(["merge", str(a), str(tmp_path / "missing"), str(tmp_path / "bad")]) == 2
    assert "SHORT: " in capsys.readouterr().err


def test_long2short_rl_config_turns_length_penalty_on_and_caps_responses(tmp_path):
    cfg = hf_config(tmp_path, tmp_path, rollout={"max_response_tokens": 300, "segment_tokens": 200},
                    algo={"len_reward_weight": 0.0, "len_warmup_iterations": 20})
    rl = long2short_rl_config(cfg, Long2ShortConfig(rl_iterations=3, rl_prompts_per_iteration=5))
    assert (rl.algo.len_reward_weight, rl.algo.len_warmup_iterations) == (cfg.phase.long2short_len_reward_weight, 0)
    rollout = rl.rollout
    assert (rollout.max_response_tokens, rollout.segment_tokens, rollout.prompts_per_iteration) == (160, 160, 5)
    assert (rl.rl.iterations, rl.run.name, rl.run.resume) == (3, "run/long2short/rl", None)


def test_long2short_builds_four_models_evaluates_five_and_reuses_them(tiny_model_dir, tmp_path, parity_verifier):
    cfg = hf_config(tiny_model_dir, tmp_path, data={"levels": [1], "train_per_level": 20, "heldout_per_level": 4,
                                                     "verifier": parity_verifier},
                    sft={"enabled": False}, rollout={"prompts_per_iteration": 4, "samples_per_prompt": 2},
                    eval={"samples": 1, "max_problems_per_level": 3}, phase={"long2short_max_response_tokens": 20})
    long_dir = tmp_path / "run" / "final_model"  # stands in for the RL model (sft disabled: short = base)
    shutil.copytree(build_tiny_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2,
                                                 intermediate_size=128), tmp_path / "long", seed=7), long_dir)
    mark_done(long_dir)
    opts = Long2ShortConfig(problems=6, samples_per_problem=4, sft_steps=2, sft_tokens_per_step=2048, dpo_steps=2,
                            rl_iterations=1, rl_prompts_per_iteration=3)
    report = run_long2short(cfg, opts)
    assert [r.method for r in report.rows] == ["long", "merge", "merge_srs", "dpo", "rl"]
    root = tmp_path / "run" / "long2short"
    table = json.loads((root / "table.json").read_text())
    assert [r["method"] for r in table["rows"]] == ["long", "merge", "merge_srs", "dpo", "rl"]
    assert table["rows"][0]["token_ratio"] == 1.0 and set(table["eval"]) == {r.method for r in report.rows}
    assert (root / "accuracy_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    assert len((root / "samples.jsonl").read_text().splitlines()) == 6
    srs_info = table["rows"][2]["details"]
    assert srs_info["rows"] + srs_info["skipped_no_correct"] == 6
    rl = scalars(root / "rl" / "tb" / "rl")  # long2short RL: length penalty from the start, its own cap
    assert rl["algo/len_reward_weight"] == [0.5] and rl["response/length_max"][0] <= 20
    before = {m: (root / m / "final_model" / "model.safetensors").stat().st_mtime_ns for m in opts.methods}
    run_long2short(cfg, opts)  # unchanged inputs and settings: every model is reused
    assert before == {m: (root / m / "final_model" / "model.safetensors").stat().st_mtime_ns for m in opts.methods}


def test_a_response_cut_at_the_budget_is_wrong(tiny_model_dir, tmp_path):
    """Shortest rejection sampling scores as RL does: a truncated response never wrote its answer, so it is
    wrong even where the verifier would accept its text (here every text is accepted)."""

    def factory(**_):
        return lambda responses, problems: [1.0] * len(responses)

    VERIFIERS.register("always_right_l2s_test", factory)
    try:
        cfg = hf_config(tiny_model_dir, tmp_path)
        problems = [Problem(uid=f"p{i}", question=f"{i}+1=", answer=str(i + 1), difficulty=1) for i in range(3)]
        cut = sample_scored(tiny_model_dir, problems, cfg, "always_right_l2s_test", 4, 1.0, 2)
        roomy = sample_scored(tiny_model_dir, problems, cfg, "always_right_l2s_test", 4, 1.0, 200)
    finally:
        VERIFIERS.unregister("always_right_l2s_test")
    # every text is accepted, so exactly the responses that ended within the budget are right: a 2-token
    # budget cuts most of the untrained model's responses (it ends with p ~ 1/100 per token), 200 few
    assert sum(s.correct for ss in cut for s in ss) < sum(s.correct for ss in roomy for s in ss)
    assert sum(not s.correct for ss in cut for s in ss) >= 6
    assert all(s.num_tokens <= 2 for ss in cut for s in ss)


def test_the_merge_partner_is_a_warm_up_on_short_traces(tiny_model_dir, tmp_path):
    """``long2short.short_model: short_sft`` (the paper merges a long-CoT and a short-CoT model): the warm-up's
    recipe on traces with no re-checks or corrections, from the same base, cached apart from the run's own
    long-trace warm-up and reused; ``warm_up`` (the default) asks for that one."""
    from kimi_rl.long2short.stages import input_models
    from kimi_rl.pipeline import cached_warm_up

    cfg = hf_config(tiny_model_dir, tmp_path, data={"levels": [1], "train_per_level": 20, "heldout_per_level": 2},
                    sft={"max_steps": 2, "tokens_per_step": 1024, "warmup_steps": 1, "log_every": 1})
    final = tmp_path / "run" / "final_model"
    shutil.copytree(tiny_model_dir, final)
    mark_done(final)
    long_dir, short_dir = input_models(cfg, Long2ShortConfig(short_model="short_sft"))
    assert long_dir == final and (short_dir / "config.json").is_file()
    short_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_rechecks=0, correction_prob=0.0))
    assert cached_warm_up(short_cfg) == short_dir and cached_warm_up(cfg) is None  # not the long-trace warm-up
    stamp = (short_dir / "model.safetensors").stat().st_mtime_ns
    assert input_models(cfg, Long2ShortConfig(short_model="short_sft")) == (long_dir, short_dir)
    assert (short_dir / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not trained again
    with pytest.raises(ConfigError, match="no cached SFT warm-up model"):
        input_models(cfg, Long2ShortConfig())
    with pytest.raises(ConfigError, match="long2short.short_model: must be short_sft or warm_up"):
        Long2ShortConfig(short_model="base")
