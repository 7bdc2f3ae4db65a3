"""kimi-rl ablate (src/ablate.py, conf/ablations.yaml): the shipped ablations compose, bad files are one-line
errors naming the file and key, the table's figures are computed as documented, and a real two-arm ablation
runs end to end (slow) and is reused when run again."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kimi_rl.ablate import (Ablation, arm_configs, arm_row, format_markdown, load_ablations, plot_curves,
                            run_ablation)
from kimi_rl.config import Config, ConfigError
from kimi_rl.config.loader import default_conf_dir

from tb_scalars import event_scalars


def test_every_shipped_ablation_composes_and_its_arms_differ_only_as_said() -> None:
    settings, ablations = load_ablations()
    assert {"rl_vs_sft", "length_reward", "negative_gradients", "curriculum", "prioritized",
            "partial_rollouts"} <= set(ablations)
    for name, ab in ablations.items():
        assert ab.claim and ab.curves, name
        configs = arm_configs(ab, settings, ["run.dir=/tmp/x"])
        assert [c.run.name for c in configs.values()] == [f"ablations/{name}/{a}" for a in ab.arms]
        assert len({c.run.seed for c in configs.values()}) == 1
        assert all(c.rl.iterations == 12 and c.rollout.prompts_per_iteration == 32 for c in configs.values())
    ng = arm_configs(ablations["negative_gradients"], settings, [])
    assert [c.algo.loss for c in ng.values()] == ["mirror_descent", "rest", "grpo"]
    lr = arm_configs(ablations["length_reward"], settings, ["algo.lr=1e-5"])  # the command line reaches every arm
    assert [c.algo.len_reward_weight for c in lr.values()] == [0.0, 0.5]
    assert all(c.algo.lr == 1e-5 for c in lr.values())
    pr = arm_configs(ablations["partial_rollouts"], settings, [])
    assert [c.rollout.segment_tokens for c in pr.values()] == [None, 96]
    cu = arm_configs(ablations["curriculum"], settings, [])["curriculum"]
    assert [(s.iterations, s.levels) for s in cu.data.curriculum] == [(2, [1, 2]), (2, [1, 2, 3]), (0, [])]
    assert [c.data.sampler for c in arm_configs(ablations["curriculum"], settings, []).values()] == [
        "uniform", "curriculum", "curriculum_prioritized"]


def test_an_arms_key_is_its_training_config() -> None:
    """A finished arm is reused when its training sections match: tools' keys (bench, curate) and run.name do
    not count, anything the run reads does."""
    from kimi_rl.ablate import arm_key
    from kimi_rl.config.loader import load_config

    base = arm_key(load_config(["run.name=a"]))
    assert arm_key(load_config(["run.name=b", "bench.train_steps=9", "curate.tries=3"])) == base
    assert arm_key(load_config(["run.name=a", "algo.lr=1e-5"])) != base
    assert arm_key(load_config(["run.name=a", "eval.samples=2"])) != base


def _conf_with(tmp_path: Path, text: str) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(default_conf_dir(), conf)
    (conf / "ablations.yaml").write_text(text)
    return conf


@pytest.mark.parametrize("text, message", [
    ("settings: []\nablations:\n  a:\n    arms: {x: []}\n    colour: red\n", "ablations.a: unknown key 'colour'"),
    ("settings: []\nablations:\n  a:\n    arms: {on: []}\n", "arm name True must be a plain name"),
    ("settings: []\nablations:\n  a:\n    arms: []\n", "ablations.a.arms: expected a mapping"),
    ("settings: rl.iterations=2\nablations: {}\n", "settings: expected a list"),
    ("settings: []\nablations: {}\nextra: 1\n", "expected the top-level keys"),
])
def test_a_bad_ablations_file_names_the_file_and_key(tmp_path, text, message) -> None:
    conf = _conf_with(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as e:
        load_ablations(conf)
    assert str(conf / "ablations.yaml") in str(e.value)


def test_a_bad_arm_override_fails_before_any_arm_runs(tmp_path) -> None:
    conf = _conf_with(tmp_path, "settings: []\nablations:\n  a:\n    claim: c\n    arms:\n      good: []\n"
                                "      bad: [algo.nope=1]\n")
    with pytest.raises(ConfigError, match="algo.nope"):
        run_ablation("a", [f"run.dir={tmp_path / 'runs'}"], conf)
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
    rm = _conf_with(tmp_path / "rm", "settings: []\nablations:\n  a:\n    arms:\n      rule: []\n      judge: "
                                     "[data.verifier=reward_model, 'data.verifier_options={kind: cot, model: /no/rm}']\n")
    with pytest.raises(ConfigError, match="arm 'judge': .*/no/rm"):  # the reward model is not made yet
        run_ablation("a", [f"run.dir={tmp_path / 'runs'}"], rm)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="choices: a, all"):
        run_ablation("b", [], conf)
    with pytest.raises(ConfigError, match="one device"):
        run_ablation("a", ["trainer=ddp"], _conf_with(tmp_path / "2", "settings: []\nablations:\n  a:\n"
                                                                     "    arms: {x: []}\n"))


def test_table_figures_on_hand_made_results(tmp_path) -> None:
    ab = Ablation(name="n", claim="claim", arms={"a": [], "b": []}, curves=["reward/accuracy"])

    def result(before: float, after: float) -> dict:
        level = {"problems": 2, "accuracy": after, "mean_tokens": 10.0}
        return {"iterations": 2, "seconds": 30.0, "eval": {
            "before": {"accuracy": before, "samples": 4, "mean_tokens": 100.0, "pass_at_k": {"1": before, "4": 0.5},
                       "per_level": {"1": level}},
            "after": {"accuracy": after, "samples": 4, "mean_tokens": 80.0, "pass_at_k": {"1": after, "4": 0.625},
                      "per_level": {"1": level}}}}

    scalars = {"time/rollout_s": {0: 1.0, 1: 3.0}, "time/train_s": {0: 2.0, 1: 2.0}, "time/score_s": {0: 0.5},
               "rollout/new_tokens": {0: 500.0, 1: 1500.0}, "reward/accuracy": {0: 0.25, 1: 0.75}}
    row = arm_row("a", result(0.25, 0.5), scalars, ab.curves)
    assert row["gain"] == pytest.approx(0.25) and row["k"] == 4
    assert row["pass_at_k_before"] == 0.5 and row["pass_at_k_after"] == 0.625
    assert row["iteration_s"] == pytest.approx((3.5 + 5.0) / 2)  # rollout + score + train (+ sync) per iteration
    assert row["s_per_1k_sampled_tokens"] == pytest.approx(8.5 / 2000 * 1000)
    assert row["curve_means"] == {"reward/accuracy": pytest.approx(0.5)}
    assert row["gain_per_minute"] == pytest.approx(25.0 / (8.5 / 60))  # +25 points in 8.5 s of iterations
    rows = [row, arm_row("b", result(0.25, 0.125), {}, ab.curves)]
    md = format_markdown(ab, rows, "kimi-rl ablate n")
    assert "| a | 25.0 | 50.0 | +25.0 | 50.0 | 50.0 | 62.5 | 100.0 | 80.0 | 4.25 | 4.250 | 176.47 | 0.500 |" in md
    assert "| b | 25.0 | 12.5 | -12.5 |" in md and "k = 4" in md
    png = plot_curves(ab, {"a": scalars, "b": {}}, rows, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_two_arm_ablation_runs_end_to_end_and_is_reused(tiny_model_dir, tmp_path, monkeypatch) -> None:
    from kimi_rl.cli import main

    conf = _conf_with(tmp_path, (
        "settings: [rl.iterations=2, rl.checkpoint_every=0, rl.sample_log_every=0]\nablations:\n  tiny:\n"
        "    claim: negative gradients on a tiny model\n    common: [rollout=hf]\n"
        "    arms:\n      md: [algo=mirror_descent]\n      rest: [algo=rest]\n    curves: [reward/accuracy]\n"
        "  again:\n    claim: the same arm in another ablation\n    common: [rollout=hf]\n"
        "    arms: {same: [algo=mirror_descent]}\n"))
    monkeypatch.setenv("KIMI_RL_CONF", str(conf))
    words = ["ablate", "tiny", f"model.path={tiny_model_dir}", "sft.enabled=false", f"run.dir={tmp_path / 'runs'}",
             "data.levels=[1,2]", "data.curriculum=[]", "data.train_per_level=20", "data.heldout_per_level=4", "rollout.prompts_per_iteration=2",
             "rollout.samples_per_prompt=2", "rollout.max_response_tokens=16", "eval.samples=2",
             "eval.max_problems_per_level=2", "algo.minibatch_size=4", "trainer.threads=1"]
    assert main(words) == 0
    folder = tmp_path / "runs" / "ablations" / "tiny"
    table = json.loads((folder / "table.json").read_text())
    assert [r["arm"] for r in table["rows"]] == ["md", "rest"]
    assert table["arms"] == {"md": ["rollout=hf", "algo=mirror_descent"], "rest": ["rollout=hf", "algo=rest"]}
    for r in table["rows"]:
        assert r["iterations"] == 2 and r["before"] is not None and r["after"] is not None and r["k"] == 2
        assert r["iteration_s"] > 0 and r["sampled_tokens_per_iteration"] > 0
    # the same warm-up and seed: both arms start from the same held-out numbers
    assert table["rows"][0]["before"] == table["rows"][1]["before"]
    for arm in ("md", "rest"):
        assert sorted(event_scalars(folder / arm / "tb" / "rl")["reward/accuracy"]) == [0, 1]
    assert "loss: rest" in (folder / "rest" / "config.yaml").read_text()  # each arm ran its own config
    assert "loss: mirror_descent" in (folder / "md" / "config.yaml").read_text()
    assert "| md |" in (folder / "table.md").read_text() and (folder / "curves.png").stat().st_size > 0
    stamp = (folder / "md" / "ablation_arm.json").stat().st_mtime
    assert main(words) == 0  # the same command again: both arms reused, the table rewritten
    assert (folder / "md" / "ablation_arm.json").stat().st_mtime == stamp
    assert (folder / "kimi-rl.log").read_text().count("already finished with this config; reusing it") == 2
    # an identical arm of another ablation (only run.name differs) is not run again either
    assert main(["ablate", "again"] + words[2:]) == 0
    again = json.loads((tmp_path / "runs" / "ablations" / "again" / "table.json").read_text())
    assert again["rows"][0]["folder"] == str(folder / "md") and again["rows"][0]["after"] == table["rows"][0]["after"]
    assert not (tmp_path / "runs" / "ablations" / "again" / "same").exists()
