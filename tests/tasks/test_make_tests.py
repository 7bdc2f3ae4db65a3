"""make-tests (k1.5 2.3.5): the two voting rules on hand-made outputs, rows, and the shipped problems in the sandbox."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kimi_rl.cli import main
from kimi_rl.config import ConfigError
from kimi_rl.config.loader import load_config
from kimi_rl.data.make_tests import (GeneratorProblem, Judgement, MakeTestsError, Submission, canonical_output, judge,
                                kept_row, majority_output, parse_problem, read_table_rows, vote_counts,
                                write_table_rows)
from kimi_rl.rewards.code import outputs_match

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "tests/data/generated_problems/problems.jsonl"
UID_BASE = 62000 + 8 * (os.getpid() % 400)
"""Sandbox users of our own, so another run's sweep on this machine never kills our programs."""


def test_canonical_output_agrees_with_the_judge():
    pairs = [("3\n", "3"), ("1 2  \n3\n\n\n", "1 2\n3"), ("a\r\nb\r\n", "a\nb\n"), ("3 \n4", "34"), ("", "0"),
             (" 1", "1"), ("1\n\n2", "1\n2")]
    for a, b in pairs:
        assert (canonical_output(a) == canonical_output(b)) == outputs_match(a, b), (a, b)


def test_majority_needs_the_threshold_and_failed_runs_agree_with_nobody():
    assert majority_output(["5\n"] * 7 + ["4"] * 3, 7) == "5"
    assert majority_output(["5"] * 6 + ["4"] * 4, 7) is None
    assert majority_output(["5"] * 6 + [None] * 4, 7) is None
    assert majority_output(["5 \n"] * 4 + ["5"] * 3 + [None] * 3, 7) == "5"  # judge-equal outputs count together
    assert majority_output([None] * 10, 1) is None
    assert vote_counts(["5"] * 6 + ["4"] * 2 + [None] * 2) == [6, 2, 1, 1]


def test_judge_hand_worked_ten_submissions():
    # inputs: 0 all agree; 1: 7 agree (kept, expected "b"); 2: 6 vs 4 (dropped)
    rows = [["a", "b", "x"]] * 6 + [["a", "b", "y"]] * 1 + [["a", "c", "y"]] * 2 + [["a", None, "y"]]
    verdict = judge(rows, min_agreeing=7, min_passing=9)
    assert verdict.expected == ("a", "b", None)
    assert verdict.passed == (True,) * 7 + (False,) * 3  # input 2 is dropped, so "x" vs "y" no longer matters
    assert not verdict.kept  # 7 of 10 pass < 9
    assert judge(rows, 7, 7).kept
    assert not judge([["p"], ["q"]] * 5, 7, 1).kept  # no input kept: no problem, whatever passes


def test_config_rules_are_checked_at_start():
    cfg = load_config([])
    assert (cfg.make_tests.inputs_per_problem, cfg.make_tests.submissions, cfg.make_tests.min_agreeing,
            cfg.make_tests.min_passing) == (50, 10, 7, 9)
    for word, key in (("make_tests.min_agreeing=5", "min_agreeing"), ("make_tests.min_passing=11", "min_passing"),
                      ("make_tests.inputs_per_problem=0", "inputs_per_problem"),
                      ("make_tests.time_limit_s=0", "time_limit_s")):
        with pytest.raises(ConfigError, match=rf"^make_tests\.{key}: "):
            load_config([word])


def test_rows_parse_and_bad_rows_name_the_row():
    row = {"id": "p", "question": "q", "generator": "def generate(rng, index):\n    return '1'\n",
           "submissions": ["print(1)", {"code": "print(2)", "label": "two"}], "time_limit_s": 1.5}
    problem = parse_problem(row, "f row 0", "f-0")
    assert problem.uid == "p" and problem.time_limit_s == 1.5
    assert problem.submissions == (Submission("#0", "print(1)"), Submission("two", "print(2)"))
    for bad, words in (({**row, "generator": "print(1)"}, "generate"), ({**row, "submissions": []}, "submissions"),
                       ({**row, "submissions": [{"label": "x"}]}, r"submissions\[0\]"),
                       ({**row, "question": ""}, "question")):
        with pytest.raises(MakeTestsError, match=rf"^f row 3: .*{words}"):
            parse_problem(bad, "f row 3", "f-3")


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_kept_rows_load_as_code_problems(tmp_path, suffix):
    from kimi_rl.tasks.code import StdioTest, load_code_problems

    problem = GeneratorProblem("p", {"id": "p", "question": "Print n.", "difficulty": 2, "generator": "g",
                                     "submissions": ["s"]}, "g", (Submission("bad", "x"), Submission("ok", "y")))
    row = kept_row(problem, ["1\n", "2\n"], Judgement(("1", None), (False, True), True))
    assert row == {"id": "p", "question": "Print n.", "difficulty": 2, "tests": [{"input": "1\n", "output": "1\n"}],
                   "solution": "y"}
    path = write_table_rows(tmp_path / f"out{suffix}", [row])
    assert read_table_rows(path) == [row]
    loaded = load_code_problems(path).problems
    assert loaded[0].meta["code"].tests == (StdioTest("1\n", "1\n"),) and loaded[0].difficulty == 2


# ---------------------------------------------------------------- the shipped problems, in the sandbox


@pytest.fixture(scope="module")
def sandbox_ok():
    from kimi_rl.sandbox import SandboxUnavailable, make_sandbox

    try:
        return make_sandbox("auto", uid_base=UID_BASE).name
    except SandboxUnavailable as err:
        pytest.skip(f"no sandbox backend runs here: {err}")


def test_cli_make_tests_on_the_shipped_problems(tmp_path, sandbox_ok, capsys):
    out = tmp_path / "kept.jsonl"
    words = [f"make_tests.path={SHIPPED}", f"make_tests.out={out}", "make_tests.inputs_per_problem=8",
             f"make_tests.uid_base={UID_BASE}", "make_tests.workers=2", "make_tests.time_limit_s=5"]
    assert main(["make-tests", *words]) == 0
    report = json.loads((tmp_path / "kept.report.json").read_text())
    by_uid = {p["uid"]: p for p in report["problems"]}
    failing = {uid: sorted(s["label"] for s in p["submissions"] if not s["passed"]) for uid, p in by_uid.items()}
    # one wrong reference of ten: caught, problem kept (9 of 10 pass)
    assert by_uid["gen-max-subarray"]["kept"] and failing["gen-max-subarray"] == ["WRONG-empty-block-allowed"]
    assert by_uid["gen-max-subarray"]["inputs_kept"] == 8
    gcd = by_uid["gen-gcd-list"]
    assert gcd["kept"] and failing["gen-gcd-list"] == ["WRONG-crashes-on-one-number"]
    crash = next(s for s in gcd["submissions"] if not s["passed"])
    assert crash["runs"]["error"] == 2 and "IndexError" in crash["first_failure"]  # inputs 0 and 4: n = 1
    # problem rule: two wrong references of ten leave 8 passing < 9
    distinct = by_uid["gen-distinct-sorted"]
    assert not distinct["kept"] and distinct["submissions_passing"] == 8 and "need 9" in distinct["reason"]
    assert failing["gen-distinct-sorted"] == ["WRONG-keeps-duplicates", "WRONG-sorts-as-text"]
    # input rule: even n splits the votes 6 / 2 / 2, so those inputs go; odd n: all ten agree
    median = by_uid["gen-median"]
    assert median["kept"] and median["inputs_kept"] == 4 and median["submissions_passing"] == 10
    assert [d["votes"] for d in median["dropped_inputs"]] == [[6, 2, 2]] * 4
    broken = by_uid["gen-broken-generator"]
    assert not broken["kept"] and "NameError" in broken["reason"]
    assert report["problems_kept"] == 3 and report["rules"]["min_agreeing"] == 7

    from kimi_rl.rewards.code import CodeVerifier
    from kimi_rl.sandbox import Limits, make_sandbox
    from kimi_rl.tasks.code import load_code_problems

    kept = load_code_problems(out).problems
    assert [p.uid for p in kept] == ["gen-max-subarray", "gen-median", "gen-gcd-list"]
    assert [len(p.meta["code"].tests) for p in kept] == [8, 4, 8]
    verify = CodeVerifier(make_sandbox("auto", uid_base=UID_BASE), Limits(wall_s=10.0), workers=2)
    assert verify([f"```python\n{p.answer}```" for p in kept], kept) == [1.0, 1.0, 1.0]
    printed = capsys.readouterr().out
    assert "3 of 5 problems kept" in printed and "why dropped: 8 of 10 submissions" in printed


def test_cli_make_tests_refuses_to_overwrite_its_input(tmp_path, capsys):
    assert main(["make-tests", f"make_tests.path={SHIPPED}", f"make_tests.out={SHIPPED}"]) == 2
    assert "make_tests.overwrite=true" in capsys.readouterr().err


def _generator_row(generator: str, uid: str = "g") -> dict:
    return {"id": uid, "question": "Print the sum of the numbers on the second line.", "generator": generator,
            "submissions": ["n = int(input())\nprint(sum(map(int, input().split())))"] * 3}


def test_generator_inputs_are_seeded_and_a_parquet_file_round_trips(tmp_path, sandbox_ok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    gen = ("import random\ndef generate(rng, index):\n    n = rng.randint(1, 5)\n"
           "    return [n, ' '.join(str(random.randint(0, 9)) for _ in range(n))]\n")  # module random is seeded too
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([_generator_row(gen)]), src)
    words = [f"make_tests.path={src}", "make_tests.inputs_per_problem=4", "make_tests.submissions=3",
             "make_tests.min_agreeing=2", "make_tests.min_passing=3", f"make_tests.uid_base={UID_BASE}",
             "make_tests.time_limit_s=5"]
    assert main(["make-tests", *words]) == 0
    first = pq.read_table(tmp_path / "in.tests.parquet").to_pylist()
    assert main(["make-tests", *words]) == 0
    again = pq.read_table(tmp_path / "in.tests.parquet").to_pylist()
    assert first == again and len(first[0]["tests"]) >= 2  # same seed, same inputs
    for test in first[0]["tests"]:
        n, numbers = test["input"].split("\n")[:2]
        assert len(numbers.split()) == int(n) and test["output"] == f"{sum(map(int, numbers.split()))}\n"


def test_a_cyaron_generator_where_the_sandbox_python_has_it(tmp_path, sandbox_ok):
    from kimi_rl.sandbox import Limits, make_sandbox

    sandbox = make_sandbox("auto", uid_base=UID_BASE)
    probe = sandbox.run({"p.py": "import cyaron"}, [sandbox.python, "-I", "p.py"], b"", Limits(wall_s=20.0))
    if not probe.ok:
        pytest.skip(f"cyaron is not installed for the sandbox's Python ({sandbox.python}); it is optional")
    gen = ("import cyaron\ndef generate(rng, index):\n    n = cyaron.randint(1, 5)\n"
           "    return f'{n}\\n' + ' '.join(str(cyaron.randint(0, 9)) for _ in range(n))\n")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(_generator_row(gen)) + "\n")
    assert main(["make-tests", f"make_tests.path={src}", "make_tests.inputs_per_problem=3", "make_tests.submissions=3",
                 "make_tests.min_agreeing=2", "make_tests.min_passing=3", f"make_tests.uid_base={UID_BASE}"]) == 0
    assert json.loads((tmp_path / "in.tests.report.json").read_text())["problems"][0]["kept"]
