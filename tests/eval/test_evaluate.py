"""Evaluation figures on hand-built results, the tables, and ``kimi-rl eval`` end to end (tiny model, hf engine)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kimi_rl.cli import main
from kimi_rl.config import Config, ConfigError, DataConfig
from kimi_rl.eval.evaluate import (EvalResult, LevelStats, answer_key, evaluate, format_summary, format_table,
                              pass_k_values, samples_per_problem, score_problems, vote_keys)
from kimi_rl.eval.command import EvalArgs, ModelSpec, parse_eval_args, resolve_models, select_problems
from kimi_rl.rollout.types import Generation
from kimi_rl.tasks.base import Problem

PROBLEMS = [Problem("a", "2+3", "5", 1), Problem("b", "1+1", "2", 1), Problem("c", "9+9", "18", 2)]
CORRECT = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
LENGTHS = [[10, 20, 30, 40], [5, 5, 5, 5], [60, 70, 80, 100]]
ANSWERS = [["5", "7", "7", None], ["2", "2", "3", "3"], [None] * 4]


def test_pass_k_values():
    assert pass_k_values(1) == [1] and pass_k_values(4) == [1, 2, 4] and pass_k_values(6) == [1, 2, 4, 6]


def test_score_problems_hand_computed():
    r = score_problems(PROBLEMS, LENGTHS, CORRECT, 4, ANSWERS)
    assert r.accuracy == pytest.approx(3 / 12) and r.problems == 3
    # pass@2: 1 - C(3,2)/C(4,2) = 1/2, 1 - C(2,2)/C(4,2) = 5/6, 0
    assert r.pass_at_k == pytest.approx({1: 0.25, 2: (0.5 + 5 / 6) / 3, 4: 2 / 3})
    # votes: "7" (wrong), tie "2"/"3" -> "2" (right), no answer
    assert r.majority == pytest.approx(1 / 3)
    assert r.mean_tokens == pytest.approx(430 / 12)
    assert r.p95_tokens == pytest.approx(89.0)  # 0.95 * 11 = 10.45 between 80 and 100
    assert r.per_level[1] == LevelStats(2, pytest.approx(3 / 8), pytest.approx(15.0), 4)
    assert r.per_level[2] == LevelStats(1, 0.0, pytest.approx(77.5), 4)


def test_score_problems_without_answers_has_no_majority():
    assert score_problems(PROBLEMS, LENGTHS, CORRECT, 4).majority is None


def test_answer_key_normalizes_whitespace():
    assert answer_key(r"\boxed{ 1 / 2 }") == answer_key(r"so \boxed{1/2}") == "1/2"
    assert answer_key("```python\nprint( 1 )\n```") == "print(1)" and answer_key("none") is None


def test_vote_keys_put_correct_samples_in_one_class():
    assert vote_keys(["answer: 5", r"\boxed{5.0}", r"\boxed{7}", "?"], [1.0, 1.0, 0.0, 0.0], "5") == ["5.0", "5.0", "7", None]
    assert vote_keys(["the answer is 5"], [1.0], "#### 5") == ["####5"]  # unboxed but right: still a vote


class _CharTok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


class _Scripted:
    """Returns responses[i][j] as sample j of prompt i."""

    def __init__(self, responses):
        self.responses = responses

    def generate(self, prompts, max_new_tokens, n, temperature, top_p, logprobs=True):
        assert len(prompts) == len(self.responses) and all(len(r) == n for r in self.responses)
        return [[Generation([ord(c) for c in t], [0.0] * len(t), "stop") for t in r] for r in self.responses]


def test_evaluate_scores_and_votes_with_the_verifier():
    from kimi_rl.rewards import VERIFIERS

    responses = [[r"\boxed{5}", r"\boxed{ 6 }", r"\boxed{6}"], [r"\boxed{2}", "x", r"\boxed{2}"]]
    r = evaluate(_Scripted(responses), _CharTok(), PROBLEMS[:2], [[0], [0]], VERIFIERS.get("arithmetic")(), 3, 1.0, 50)
    assert r.accuracy == pytest.approx(3 / 6)
    assert r.pass_at_k[1] == pytest.approx(0.5) and r.pass_at_k[3] == pytest.approx(1.0)
    assert r.majority == pytest.approx(0.5)  # "6" outvotes the right "5"; "2" wins
    assert r.mean_tokens == pytest.approx(sum(len(t) for ts in responses for t in ts) / 6)
    unboxed = evaluate(_Scripted([["5"]]), _CharTok(), PROBLEMS[:1], [[0]], lambda rs, ps: [1.0], 1, 0.0, 50)
    assert unboxed.majority == unboxed.accuracy == 1.0  # n=1: majority vote is pass@1


class _ByPrompt:
    """Returns responses[prompt[0]] for each prompt, checking that n matches; records each call's n."""

    def __init__(self, responses):
        self.responses, self.calls = responses, []

    def generate(self, prompts, max_new_tokens, n, temperature, top_p, logprobs=True):
        self.calls.append(n)
        assert all(len(self.responses[p[0]]) == n for p in prompts)
        return [[Generation([ord(c) for c in t], [0.0] * len(t), "stop") for t in self.responses[p[0]]]
                for p in prompts]


def test_a_small_level_gets_more_samples_and_each_problem_counts_once():
    """eval.balance_levels: level 1's one problem gets 2 x ceil(2 / 1) = 4 samples, level 2's two problems 2 each;
    pass@1 and tokens are means over problems, pass@k stops at the base n; one engine call per n."""
    from kimi_rl.rewards import VERIFIERS

    probs = [PROBLEMS[0], Problem("b", "1+1", "2", 2), Problem("c", "9+9", "18", 2)]
    ns = samples_per_problem(probs, 2, True)
    assert ns == [4, 2, 2] and samples_per_problem(probs, 2, False) == [2, 2, 2]
    engine = _ByPrompt([[r"\boxed{5}", "x", "x", "x"], [r"\boxed{2}", r"\boxed{2}"], ["x", "x"]])
    r = evaluate(engine, _CharTok(), probs, [[0], [1], [2]], VERIFIERS.get("arithmetic")(), ns, 1.0, 50)
    assert engine.calls == [2, 4]
    assert r.accuracy == pytest.approx((1 / 4 + 1 + 0) / 3)  # not the 3 / 8 of all samples pooled
    assert r.samples == 2 and set(r.pass_at_k) == {1, 2}
    assert r.pass_at_k[2] == pytest.approx((1 - 3 / 6 + 1 + 0) / 3)  # problem a: 1 - C(3,2)/C(4,2)
    assert r.mean_tokens == pytest.approx((12 / 4 + 9 + 1) / 3)  # "\boxed{5}" is 9 characters, "x" one
    assert r.per_level[1] == LevelStats(1, 0.25, 3.0, 4) and r.per_level[2] == LevelStats(2, 0.5, 5.0, 2)
    with pytest.raises(ValueError, match="2 sample counts for 3 problems"):
        evaluate(engine, _CharTok(), probs, [[0], [1], [2]], VERIFIERS.get("arithmetic")(), [4, 2], 1.0, 50)


def test_heldout_eval_reduces_per_level_n_to_the_single_process_figures():
    """The RL run's held-out eval sums counts across ranks with each level's own n: on one rank it must give
    evaluate's figures back."""
    from types import SimpleNamespace

    from kimi_rl.callbacks import HeldoutEval

    probs = [PROBLEMS[0], Problem("b", "1+1", "2", 2), Problem("c", "9+9", "18", 2)]
    he = HeldoutEval(None, probs, [[0], [1], [2]], 2, 1.0, 50, balance_levels=True)
    assert he.n == [4, 2, 2]
    correct = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    lengths = [[9, 1, 1, 1], [9, 9], [1, 1]]
    local = score_problems(probs, lengths, correct, 2)
    got = he._reduce(local, SimpleNamespace(world_size=1))
    assert got.accuracy == pytest.approx(local.accuracy) and got.mean_tokens == pytest.approx(local.mean_tokens)
    assert got.pass_at_k == pytest.approx(local.pass_at_k) and got.problems == 3
    assert got.per_level == pytest.approx(local.per_level)


def test_sample_and_score_keeps_each_problems_samples_together():
    """One engine call, one verifier call over the flattened texts, split back per problem; a response cut at the
    budget is wrong only when asked (RL, long2short), not in evaluation."""
    from kimi_rl.rewards.scoring import sample_and_score

    calls = []

    def verifier(texts, problems):
        calls.append(len(texts))
        return [float(t == p.answer) for t, p in zip(texts, problems)]

    class Cut(_Scripted):
        def generate(self, *a, **kw):
            gens = super().generate(*a, **kw)
            gens[1][0].finish_reason = "length"
            return gens

    scored = sample_and_score(Cut([["5", "x"], ["2", "22"]]), _CharTok(), PROBLEMS[:2], [[0], [0]], verifier, 2, 1.0, 9)
    assert calls == [4]  # answers "5" and "2"
    assert [s.problem for s in scored] == PROBLEMS[:2] and [s.texts for s in scored] == [["5", "x"], ["2", "22"]]
    assert [s.scores for s in scored] == [[1.0, 0.0], [1.0, 0.0]]
    assert scored[1].correct() == [True, False] and scored[1].correct(cut_is_wrong=True) == [False, False]
    assert [s.lengths for s in scored] == [[1, 1], [1, 2]]


def _result(acc: float, tokens: float) -> EvalResult:
    return EvalResult(acc, tokens, {1: LevelStats(2, acc, tokens, 4)}, 4, {1: acc, 4: 0.75}, 0.5, 2 * tokens, 2)


def test_format_summary_and_table():
    results = {"sft": _result(0.25, 100.0), "rl": _result(0.5, 40.0)}
    lines = format_summary(results).splitlines()
    assert "pass@1" in lines[0] and "pass@4" in lines[0] and "maj@n" in lines[0] and "p95 tok" in lines[0]
    assert lines[2].split() == ["sft", "|", "2", "4", "|", "25.0", "75.0", "50.0", "|", "100.0", "200.0"]
    assert lines[3].split()[5:7] == ["50.0", "75.0"]
    assert format_table(results).splitlines()[-1].split() == ["all", "|", "25.0", "100.0", "|", "50.0", "40.0"]


def test_to_dict_is_json():
    d = json.loads(json.dumps(_result(0.5, 10.0).to_dict()))
    assert d["pass_at_k"] == {"1": 0.5, "4": 0.75} and d["majority_vote"] == 0.5 and d["p95_tokens"] == 20.0
    assert d["per_level"]["1"] == {"problems": 2, "accuracy": 0.5, "mean_tokens": 10.0, "samples": 4}


def test_parse_eval_args():
    args = parse_eval_args(["models=a:/x/m,runs/r/final_model", "split=all", "eval.samples=2"])
    assert args.models == [ModelSpec("a", Path("/x/m")), ModelSpec("r/final_model", Path("runs/r/final_model"))]
    assert args.split == "all" and args.overrides == ["eval.samples=2"]
    with pytest.raises(ConfigError, match="twice"):
        parse_eval_args(["models=a:/x,a:/y"])
    with pytest.raises(ConfigError, match="split=test"):
        parse_eval_args(["split=test"])


def test_select_problems_caps_per_level_and_dedupes():
    train = [Problem("t1", "q", "1", 1), Problem("h1", "q", "1", 1)]
    heldout = [Problem("h1", "q", "1", 1), Problem("h2", "q", "1", 2), Problem("h3", "q", "1", 2)]
    assert [p.uid for p in select_problems(train, heldout, "heldout", 1)] == ["h1", "h2"]
    assert [p.uid for p in select_problems(train, heldout, "all", 5)] == ["h1", "h2", "h3", "t1"]


def _copy_model(src: Path, dst: Path) -> Path:
    from kimi_rl.runs import mark_done

    shutil.copytree(src, dst)
    mark_done(dst.parent if dst.name == "model" else dst)
    return dst


def test_default_models_are_the_runs_sft_and_rl(tmp_path, tiny_model_dir):
    from kimi_rl.config.loader import load_config, save_config
    from kimi_rl.pipeline import sft_key
    from kimi_rl.runs import RunPaths

    cfg = load_config([f"run.dir={tmp_path}", "run.name=r", f"model.path={tiny_model_dir}"])
    with pytest.raises(ConfigError, match="make train"):
        resolve_models(EvalArgs(), load_config([f"run.dir={tmp_path}", "run.name=r"]))
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    save_config(cfg, paths.config)
    sft = _copy_model(tiny_model_dir, paths.sft_cache(sft_key(cfg, Path(tiny_model_dir))) / "model")
    rl = _copy_model(tiny_model_dir, paths.final_model)
    eval_cfg = load_config([f"run.dir={tmp_path}", "run.name=r", "data.levels=[1]"])  # other data: same run
    assert resolve_models(EvalArgs(), eval_cfg) == [ModelSpec("sft", sft), ModelSpec("rl", rl)]


TINY_TASK = ["data.levels=[1,2]", "data.train_per_level=2", "data.heldout_per_level=2", "eval.samples=2",
             "eval.max_response_tokens=8", "rollout=hf"]


def _scalars(folder: Path) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}


def test_cli_eval_two_models_hf_engine(tmp_path, tiny_model_dir, capsys):
    rc = main(["eval", f"models=a:{tiny_model_dir},b:{tiny_model_dir}", f"run.dir={tmp_path}", "run.name=e",
               *TINY_TASK])
    assert rc == 0
    out = tmp_path / "e" / "eval"
    report = json.loads((out / "arithmetic.json").read_text())
    a, b = report["models"]["a"], report["models"]["b"]
    assert report["samples"] == 2 and report["max_response_tokens"] == 8 and report["engine"] == "hf"
    assert a["problems"] == 4 and 0 < a["mean_tokens"] <= 8 and set(a["pass_at_k"]) == {"1", "2"}
    assert {k: a[k] for k in ("accuracy", "mean_tokens", "pass_at_k")} == {k: b[k] for k in ("accuracy", "mean_tokens", "pass_at_k")}
    tb = _scalars(tmp_path / "e" / "tb" / "eval" / "a")
    assert tb["arithmetic/pass@1"] == pytest.approx(a["accuracy"], abs=1e-6)
    assert tb["arithmetic/mean_tokens"] == pytest.approx(a["mean_tokens"], abs=1e-4)
    assert tb["arithmetic/p95_tokens"] == pytest.approx(a["p95_tokens"], abs=1e-4)
    assert set(tb) >= {"arithmetic/pass@2", "arithmetic/majority_vote", "arithmetic/accuracy_level2"}
    assert (out / "arithmetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pass@2" in capsys.readouterr().out


def test_cli_eval_exact_numbers_through_the_files(tmp_path, tiny_model_dir, monkeypatch):
    """A scripted engine in place of the model: 0, 1, 2, 3 of 3 samples right -> known figures."""
    from kimi_rl.config.loader import load_config
    from kimi_rl.models.modeling import load_tokenizer
    from kimi_rl.tasks import load_task

    words = [*TINY_TASK, "eval.samples=3"]
    cfg = load_config(words)
    task = load_task(cfg.data, cfg.run.seed)
    problems = select_problems(task.train, task.heldout, "heldout", cfg.eval.max_problems_per_level)
    counts = [0, 1, 2, 3]
    texts = [[rf"\boxed{{{int(p.answer) + (j >= c)}}}" for j in range(3)] for p, c in zip(problems, counts)]
    tok = load_tokenizer(tiny_model_dir)
    ids = [[tok(t, add_special_tokens=False)["input_ids"] for t in ts] for ts in texts]

    class Engine:  # the whole Engine protocol that eval uses: generate, close
        def close(self):
            pass

        def generate(self, prompts, max_new_tokens, n, temperature, top_p, logprobs=True):
            assert len(prompts) == 4 and n == 3
            return [[Generation(x, [0.0] * len(x), "stop") for x in xs] for xs in ids]

    monkeypatch.setattr("kimi_rl.rollout.build_engine", lambda *a: Engine())
    assert main(["eval", f"model.path={tiny_model_dir}", f"run.dir={tmp_path}", "run.name=x", *words]) == 0
    r = json.loads((tmp_path / "x" / "eval" / "arithmetic.json").read_text())["models"][Path(tiny_model_dir).name]
    # pass@2: 0, 1 - C(2,2)/C(3,2) = 2/3, 1, 1; votes: the repeated wrong answer wins with 0 or 1 right
    assert r["accuracy"] == pytest.approx(0.5) and r["majority_vote"] == pytest.approx(0.5)
    assert r["pass_at_k"] == pytest.approx({"1": 0.5, "2": (2 / 3 + 2) / 4, "3": 0.75})
    assert r["mean_tokens"] == pytest.approx(sum(len(x) for xs in ids for x in xs) / 12)
    for lv in (1, 2):
        mine = [c / 3 for p, c in zip(problems, counts) if p.difficulty == lv]
        assert r["per_level"][str(lv)]["accuracy"] == pytest.approx(sum(mine) / len(mine), abs=1e-6)
    assert not (tmp_path / "x" / "eval" / "arithmetic.png").exists()  # one model: no plot


def test_cli_eval_missing_data_file_is_a_one_line_error(tmp_path, tiny_model_dir, capsys):
    rc = main(["eval", f"model.path={tiny_model_dir}", "data.source=file", f"data.path={tmp_path}/nope.jsonl",
               f"run.dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nope.jsonl" in err and "does not exist" in err and len(err.splitlines()) == 1


def test_cli_eval_bad_data_row_is_a_one_line_error(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"answer": "3"}\n')
    rc = main(["eval", f"model.path={tiny_model_dir}", "data.source=file", f"data.path={bad}", f"run.dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "bad.jsonl" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "arithmetic").exists()


def test_cli_eval_missing_model_folder(tmp_path, capsys):
    assert main(["eval", f"models=m:{tmp_path}/none", f"run.dir={tmp_path}"]) == 2
    assert "model 'm'" in capsys.readouterr().err


def test_data_configs_point_at_real_data(monkeypatch):
    """conf/data files that name a file or package set load problems (no engine, no model)."""
    from kimi_rl.config.loader import default_conf_dir, load_config
    from kimi_rl.tasks import load_task

    monkeypatch.chdir(default_conf_dir().parent)  # data.path is relative to the repo root
    for group, n in (("gsm8k_small", 5), ("aime2024", 30), ("code_small", 3)):
        task = load_task(load_config([f"data={group}"]).data, 0)
        assert len(task.heldout) == n, group
    assert isinstance(DataConfig(), DataConfig) and isinstance(Config(), Config)


def test_eval_never_asks_an_engine_for_more_than_the_models_context(tiny_model_dir):
    from kimi_rl.config import ConfigError
    from kimi_rl.eval.command import ModelSpec, fit_context
    from kimi_rl.tasks.base import Problem

    spec = ModelSpec("tiny", Path(tiny_model_dir))  # max_position_embeddings: 512
    problems = [Problem(uid="short", question="1+1=", answer="2"), Problem(uid="long", question="x", answer="y")]
    assert fit_context(spec, problems[:1], [[1] * 10], 10 + 1000) == 512  # budgets shrink, the engine fits
    assert fit_context(spec, problems[:1], [[1] * 10], 10 + 100) == 110
    with pytest.raises(ConfigError, match="problem long has a 600-token prompt"):
        fit_context(spec, problems, [[1] * 10, [1] * 600], 700)
