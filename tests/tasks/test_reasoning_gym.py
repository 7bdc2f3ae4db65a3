"""The reasoning-gym source (src/tasks/reasoning_gym.py): split, levels, the task's own scorer, config errors."""
import doctest
import pickle
from collections import Counter

import pytest

from kimi_rl.config import ConfigError, DataConfig
from kimi_rl.config.loader import load_config
from kimi_rl.rewards import make_verifier
from kimi_rl.tasks import load_task
from kimi_rl.tasks import reasoning_gym as rg_module

LEVELS = {"chain_sum": [{"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2},
                        {"min_terms": 3, "max_terms": 3, "min_digits": 2, "max_digits": 2}]}


def _data(**kw) -> DataConfig:
    base = dict(source="reasoning_gym", rg_tasks=["chain_sum", "leg_counting"], rg_levels=LEVELS,
                levels=[1, 2], train_per_level=30, heldout_per_level=10)
    return DataConfig(**{**base, **kw})


def test_doctests_pass() -> None:
    assert doctest.testmod(rg_module).failed == 0


def test_split_is_deterministic_disjoint_and_seeded():
    a, b = load_task(_data(), seed=0), load_task(_data(), seed=0)
    assert a.verifier == "reasoning_gym"
    assert [p.uid for p in a.train] == [p.uid for p in b.train]
    assert [p.question for p in a.heldout] == [p.question for p in b.heldout]
    assert Counter((p.meta["task"], p.difficulty) for p in a.heldout) == {
        (t, lv): 10 for t in ("chain_sum", "leg_counting") for lv in (1, 2)}
    assert len(a.train) == 4 * 30 and len({p.uid for p in a.train + a.heldout}) == 4 * 40
    assert not {p.question for p in a.train} & {p.question for p in a.heldout}
    other = load_task(_data(), seed=1)
    assert {p.question for p in other.heldout} != {p.question for p in a.heldout}
    assert [p.question for p in load_task(_data(rg_seed=7), seed=1).heldout] == \
        [p.question for p in load_task(_data(rg_seed=7), seed=2).heldout]  # data.rg_seed beats run.seed


def test_small_problem_space_holds_out_a_fifth_and_never_repeats():
    one_digit = {"chain_sum": [{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}]}
    task = load_task(_data(rg_tasks=["chain_sum"], rg_levels=one_digit, levels=[1], train_per_level=500,
                           heldout_per_level=100), seed=0)
    questions = [p.question for p in task.train + task.heldout]
    assert len(questions) == len(set(questions)) == 200  # 10 x 10 digit pairs x (+, -): every one, once
    assert len(task.heldout) == 40


def test_levels_set_the_tasks_difficulty_knobs():
    task = load_task(_data(), seed=0)
    for p in task.train:
        meta = p.meta["entry"]["metadata"]
        if p.meta["task"] == "chain_sum":
            assert (meta["num_terms"], meta["num_digits"]) == (p.difficulty + 1, 2)
    # a task without data.rg_levels takes its curriculum: level k = every attribute at its k-th value
    curriculum = load_task(_data(rg_tasks=["chain_sum"], rg_levels={}, levels=[1, 3]), seed=0)
    knobs = {(p.difficulty, p.meta["entry"]["metadata"]["num_terms"], p.meta["entry"]["metadata"]["num_digits"])
             for p in curriculum.train}
    assert knobs == {(1, 2, 1), (3, 4, 3)}
    assert rg_module.level_count("chain_sum", _data(rg_levels={})) == 11


def test_verifier_scores_with_the_tasks_own_score_answer(monkeypatch):
    task = load_task(_data(), seed=0)
    problems = task.heldout
    verify = pickle.loads(pickle.dumps(make_verifier("reasoning_gym", {})))
    problems = pickle.loads(pickle.dumps(problems))  # what travels to workers and checkpoints
    right = [f"Adding up: ... <answer>{p.answer}</answer>" for p in problems]
    wrong = [f"<answer>{int(p.answer) + 1}</answer>" for p in problems]
    assert verify(right, problems) == [1.0] * len(problems)
    assert verify(wrong, problems) == [0.0] * len(problems)
    assert verify(["", "<answer></answer>", problems[2].answer], problems[:3]) == [0.0, 0.0, 0.0]
    partial = make_verifier("reasoning_gym", {"binary": False})
    p = next(q for q in problems if q.meta["task"] == "leg_counting")
    junk = f"<answer>{p.answer} legs</answer>"  # the default scorer's len(oracle) / len(answer)
    assert verify([junk], [p]) == [0.0] and partial([junk], [p]) == [pytest.approx(len(p.answer) / len(junk[8:-9]))]
    from reasoning_gym.arithmetic.leg_counting import LegCountingDataset

    seen = []
    monkeypatch.setattr(LegCountingDataset, "score_answer", lambda self, a, e: seen.append((a, e)) or 1.0)
    assert make_verifier("reasoning_gym", {})(["<answer>nonsense</answer>"], [p]) == [1.0]
    assert seen == [("nonsense", p.meta["entry"])]


@pytest.mark.parametrize("fmt, says, right, other", [
    ("answer_tags", "between <answer> and </answer> tags", "<answer> {a} </answer>", "\\boxed{{{a}}}"),
    ("boxed", "within \\boxed{}", "so \\boxed{{{a}}}.", "<answer>{a}</answer>"),
    ("last_number", "as a number", "so the total is {a}.", "{a}, or maybe {a}1"),
])
def test_answer_is_read_in_the_format_the_prompt_states(fmt, says, right, other):
    task = load_task(_data(rg_answer_format=fmt, levels=[1]), seed=0)
    p = task.heldout[0]
    assert p.question.endswith(says + ".") and p.meta["answer_format"] == fmt
    verify = make_verifier("reasoning_gym", {})
    assert rg_module.extract_answer(right.format(a=p.answer), fmt) == p.answer
    assert verify([right.format(a=p.answer), other.format(a=p.answer)], [p, p]) == [1.0, 0.0]
    # the last answer counts: a corrected answer is scored, not the first try
    wrong_then_right = right.format(a=int(p.answer) + 1) + " wait, " + right.format(a=p.answer)
    assert verify([wrong_then_right], [p]) == [1.0]


def test_last_number_is_read_as_an_adversary_would_write_it():
    """The reply's last number is its answer: listing candidates scores the last one only, a number inside a
    word or a version string is not a number, thousands commas and decimals are read, no number is None."""
    read = lambda text: rg_module.extract_answer(text, "last_number")  # noqa: E731
    assert read("maybe 5, 6, 7, 8 or 12") == "12"
    assert read("the answer is 12.") == "12" and read("total: 1,203 legs") == "1203" and read("x = -4") == "-4"
    assert read("1.5 then 2.25") == "2.25" and read("answer12 v3.7.1") is None and read("no idea") is None
    task = load_task(_data(rg_answer_format="last_number", levels=[1]), seed=0)
    p = task.heldout[0]
    verify = make_verifier("reasoning_gym", {})
    listing = " ".join(str(int(p.answer) + d) for d in range(-3, 4) if d) + f" {p.answer} 0"
    assert verify([listing, f"{p.answer} " * 5 + "is not it: 0"], [p, p]) == [0.0, 0.0]


def test_last_number_refuses_a_task_whose_answers_are_not_numbers():
    with pytest.raises(ConfigError, match=r"data\.rg_answer_format: last_number reads a number, but reasoning-gym "
                                          r"task 'word_sorting'"):  # letter_counting's counts pass
        load_task(DataConfig(source="reasoning_gym", rg_tasks=["letter_counting", "word_sorting"], rg_levels={},
                             levels=[1], train_per_level=4, heldout_per_level=2,
                             rg_answer_format="last_number"), seed=0)


@pytest.mark.parametrize("kw, key", [
    (dict(rg_tasks=["chain_sums"]), r"data\.rg_tasks: unknown reasoning-gym task 'chain_sums'; did you mean chain_sum"),
    (dict(rg_settings={"legcounting": {}}), r"data\.rg_settings: unknown reasoning-gym task 'legcounting'"),
    (dict(rg_levels={**LEVELS, "chainsum": [{}]}), r"data\.rg_levels: unknown reasoning-gym task 'chainsum'"),
    (dict(rg_settings={"chain_sum": {"bogus": 1}}, rg_levels={}), r"data\.rg_settings\.chain_sum\.bogus: not a"),
    (dict(rg_levels={"chain_sum": [{"min_term": 2}]}), r"data\.rg_levels\.chain_sum\[0\]\.min_term: not a setting"),
    (dict(rg_levels={"chain_sum": [{"min_terms": 0}]}, levels=[1]), r"data\.rg_levels\.chain_sum\[0\]: .* rejects"),
    (dict(rg_settings={"leg_counting": {"min_animals": 9, "max_animals": 2}}, rg_levels={}, levels=[1]),
     r"data\.rg_settings\.leg_counting: .* rejects"),
    (dict(levels=[3]), r"data\.levels: level 3 is beyond the 2 difficulty level"),
])
def test_bad_task_names_and_settings_are_one_line_errors_naming_the_key(kw, key):
    with pytest.raises(ConfigError, match="^" + key) as err:
        load_task(_data(**kw), seed=0)
    assert "\n" not in str(err.value)


def test_a_level_with_one_distinct_question_is_an_error(monkeypatch):
    entry = {"question": "1 + 1 =", "answer": "2", "metadata": {}}
    monkeypatch.setattr(rg_module, "_dataset", lambda task, settings, key: [entry] * 8)
    with pytest.raises(ConfigError, match=r"^data\.rg_levels\.chain_sum\[0\]: level 1 .* yields 1 distinct"):
        load_task(_data(levels=[1]), seed=0)


@pytest.mark.parametrize("kw, key", [
    (dict(rg_tasks=[]), "data.rg_tasks"), (dict(rg_tasks=["gcd", "gcd"]), "data.rg_tasks"),
    (dict(rg_levels={"chain_sum": []}), r"data.rg_levels.chain_sum"),
    (dict(rg_settings={"chain_sum": {"seed": 1}}), r"data.rg_settings.chain_sum.seed"),
    (dict(rg_levels={"chain_sum": [{"size": 9}]}), r"data.rg_levels.chain_sum\[0\].size"),
    (dict(levels=[0]), "data.levels"), (dict(rg_seed=-1), "data.rg_seed"),
    (dict(rg_answer_format="json"), "data.rg_answer_format"),
])
def test_config_shape_errors_come_at_load(kw, key):
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ": ") as err:
        _data(**kw)
    assert "\n" not in str(err.value)


def test_yaml_runs_through_prepare_and_bad_names_stop_it_before_training(tmp_path):
    from kimi_rl.pipeline import prepare

    small = ["data=reasoning_gym", "data.train_per_level=12", "data.heldout_per_level=3", f"run.dir={tmp_path}"]
    _, task = prepare(load_config(small + ["data.sampler=curriculum_prioritized",
                                           "data.curriculum=[{iterations: 5, levels: [1]}, {levels: [3, 4]}]"]))
    assert {p.difficulty for p in task.train} == {1, 2, 3, 4} and len(task.heldout) == 3 * 4 * 3
    # a list override replaces the file's tasks; the file's settings of the others are ignored
    _, one = prepare(load_config(small + ["data.rg_tasks=[gcd]", "data.levels=[1, 2]"]))
    assert {p.meta["task"] for p in one.train} == {"gcd"} and {p.difficulty for p in one.heldout} == {1, 2}
    for override, key in (("data.rg_tasks=[chain_summ]", r"data\.rg_tasks: unknown reasoning-gym task 'chain_summ'"),
                          ("data.verifier_options={binary: 3}", r"data\.verifier_options .*binary must be"),
                          ("data.levels=[5]", r"data\.levels: level 5")):
        with pytest.raises(ConfigError, match="^" + key):
            prepare(load_config(small + [override]))
