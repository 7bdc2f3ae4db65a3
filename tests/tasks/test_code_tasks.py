"""Code problem loading: rows -> Problems with tests and limits; bad rows name file and row; real problems score right.

The sandboxed checks use the default backend (bwrap where it works, else the logged rlimit fallback).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kimi_rl.rewards.code import CodeVerifier
from kimi_rl.sandbox import Limits, SandboxUnavailable, make_sandbox
from kimi_rl.tasks.code import (FUNCTION_TEMPLATE, STDIO_TEMPLATE, CodeSpec, CodeTaskError, StdioTest,
                                load_code_problems, load_humaneval, parse_tests)

SMALL = Path(__file__).parents[1] / "data" / "code_small.jsonl"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def verifier():
    try:
        sandbox = make_sandbox("auto")
    except SandboxUnavailable as err:
        pytest.skip(f"no sandbox backend runs here: {err}")
    return CodeVerifier(sandbox, Limits(wall_s=20.0, cpu_s=10.0), workers=2)


def test_small_file_loads_both_kinds_with_limits():
    load = load_code_problems(SMALL)
    assert load.skipped == [] and len(load.problems) == 9
    by_uid = {p.uid: p for p in load.problems}
    total = by_uid["small-sum"]
    assert total.meta["code"] == CodeSpec(kind="stdio", tests=(
        StdioTest("1 2\n", "3\n"), StdioTest("-5 5\n", "0\n"), StdioTest("1000000000000 1\n", "1000000000001\n")))
    assert total.question == STDIO_TEMPLATE.format(statement="Read two integers a and b from one line and print a + b.")
    assert total.meta["source"] == f"{SMALL}:1"
    subarray = by_uid["small-max-subarray"].meta["code"]
    assert (subarray.time_limit_s, subarray.memory_mb, by_uid["small-max-subarray"].difficulty) == (2.0, 256, 2)
    pal = by_uid["small-is-palindrome"]
    assert pal.meta["code"].kind == "assert" and len(pal.meta["code"].tests) == 3
    assert pal.question.startswith("Complete the following Python function.\n\n```python\ndef is_palindrome")
    assert sorted({p.meta["code"].kind for p in load.problems}) == ["assert", "stdio"]


def test_small_file_reference_solutions_score_one_and_stubs_zero(verifier):
    problems = load_code_problems(SMALL).problems
    assert verifier([f"```python\n{p.answer}```" for p in problems], problems) == [1.0] * len(problems)
    assert verifier(["```python\nprint(0)\n```"] * len(problems), problems) == [0.0] * len(problems)


def test_row_without_tests_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"question": "ok", "tests": [{"input": "", "output": "1"}]},
        "",
        {"question": "no tests here", "tests": []},
    ])
    with pytest.raises(CodeTaskError, match=rf"{path}:3: no tests"):
        load_code_problems(path)


def test_skip_bad_rows_counts_and_keeps_the_good(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "good", "question": "print one", "tests": [{"input": "", "output": "1"}]},
        {"question": "missing tests"},
        "{not json",
        {"question": "mixed", "tests": ["assert f()", {"input": "", "output": "1"}]},
        {"question": "neg limit", "tests": ["assert True"], "time_limit_s": -1},
        {"tests": ["assert True"]},
    ])
    load = load_code_problems(path, skip_bad_rows=True)
    assert [p.uid for p in load.problems] == ["good"]
    assert len(load.skipped) == 5
    assert [s.split(": ", 1)[0] for s in load.skipped] == [f"{path}:{i}" for i in (2, 3, 4, 5, 6)]
    assert "not valid JSON" in load.skipped[1] and "not mixed" in load.skipped[2]
    assert "must be positive" in load.skipped[3] and "missing or empty 'question'" in load.skipped[4]


def test_file_with_no_usable_rows_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "x"}])
    with pytest.raises(CodeTaskError, match="no usable code problems \\(1 rows skipped\\)"):
        load_code_problems(path, skip_bad_rows=True)


def test_tests_formats():
    assert parse_tests('[{"input": "1", "output": "2"}]', "f") == ("stdio", (StdioTest("1", "2"),))
    assert parse_tests({"inputs": ["1", "2"], "outputs": ["3", "4"]}, "f") == (
        "stdio", (StdioTest("1", "3"), StdioTest("2", "4")))
    assert parse_tests(["assert f(1) == 2"], "f") == ("assert", ("assert f(1) == 2",))
    with pytest.raises(CodeTaskError, match="f: 'tests' has 2 inputs but 1 outputs"):
        parse_tests({"inputs": ["1", "2"], "outputs": ["3"]}, "f")
    with pytest.raises(CodeTaskError, match="f: 'tests' is text but not JSON"):
        parse_tests("assert f(1) == 2", "f")


def test_json_list_file_and_custom_fields(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prompt": "def f(): ...", "tests": ["assert f() == 1"], "id": 7}]))
    load = load_code_problems(path, question_field="prompt", template="{statement}")
    assert [(p.uid, p.question) for p in load.problems] == [("7", "def f(): ...")]
    with pytest.raises(CodeTaskError, match=rf"{path} row 0: missing or empty 'question'"):
        load_code_problems(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "p.csv").write_text("x")
    with pytest.raises(CodeTaskError, match="unknown problem file type '.csv'"):
        load_code_problems(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_code_problems(tmp_path / "nope.jsonl")


def test_parquet_rows(tmp_path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (tmp_path / "p.parquet").write_bytes(b"PAR1")
        with pytest.raises(CodeTaskError, match="needs pyarrow"):
            load_code_problems(tmp_path / "p.parquet")
        return
    pq.write_table(pa.Table.from_pylist([{"question": "q", "tests": json.dumps([{"input": "", "output": "1"}])}]),
                   tmp_path / "p.parquet")
    load = load_code_problems(tmp_path / "p.parquet")
    assert load.problems[0].meta["code"].tests == (StdioTest("", "1"),)


def test_humaneval_loader():
    problems = load_humaneval()
    assert len(problems) == 164 and len({p.uid for p in problems}) == 164
    first = problems[0]
    assert first.uid == "HumanEval/0"
    spec = first.meta["code"]
    assert spec.kind == "assert" and spec.prefix.startswith("from typing import List")
    assert spec.tests[0].rstrip().endswith("check(has_close_elements)")
    assert first.question == FUNCTION_TEMPLATE.format(statement=spec.prefix)


def test_humaneval_body_only_response_continues_the_prompt(verifier):
    problem = load_humaneval()[0]
    body = problem.answer[len(problem.meta["code"].prefix):]  # the canonical body, indented
    assert verifier([f"```python\n{body}```", f"```python\n{body.replace('<', '>')}```"],
                    [problem, problem]) == [1.0, 0.0]


def test_all_humaneval_canonical_solutions_pass_and_empty_bodies_fail(verifier):
    problems = load_humaneval()
    canonical = verifier([f"```python\n{p.answer}```" for p in problems], problems)
    empty = verifier([f"```python\n{p.meta['code'].prefix}    pass\n```" for p in problems], problems)
    assert [p.uid for p, r in zip(problems, canonical) if r != 1.0] == []
    assert [p.uid for p, r in zip(problems, empty) if r != 0.0] == []
