"""Difficulty labels from pass rates: the bins, counts -> rows, the files, and ``kimi-rl difficulty`` end to end."""
from __future__ import annotations

import json
import shutil

import pytest

from kimi_rl.cli import main
from kimi_rl.config import ConfigError, CurriculumStage
from kimi_rl.data import load_problem_file
from kimi_rl.eval.difficulty import (Label, SampleCount, count_correct, difficulty_level, label_rows, labels_from_counts,
                                output_path, summarize, write_labelled_file)
from kimi_rl.rollout.types import Generation
from kimi_rl.tasks.base import Problem

ROWS = [
    {"id": "a", "question": "1+1?", "answer": "#### 2", "difficulty": 9, "source": "x"},
    {"id": "b", "question": "2+2?", "answer": "#### 4", "source": "y"},
    {"id": "c", "question": "3+3?", "answer": "#### 6", "note": None},
]
LABELS = [Label(1.0, 1), Label(0.5, 2), Label(0.0, 3)]


def test_difficulty_level_bins_of_the_failure_rate():
    # L = 3: failure rate bins [0, 1/3) -> 1, [1/3, 2/3) -> 2, [2/3, 1] -> 3
    rates = (1.0, 0.7, 2 / 3, 0.5, 1 / 3 + 1e-6, 1 / 3, 0.1, 0.0)
    assert [difficulty_level(p, 3) for p in rates] == [1, 1, 2, 2, 2, 3, 3, 3]
    # L = 4 edges at failure 0.25: p = 0.75 is already level 2; 1 - 0.9 = 0.0999.. must not fall to level 1
    assert [difficulty_level(p, 4) for p in (0.76, 0.75, 0.5, 0.25, 0.0)] == [1, 2, 3, 4, 4]
    assert difficulty_level(0.9, 10) == 2 and difficulty_level(0.7, 10) == 4
    assert {difficulty_level(p, 1) for p in (0.0, 0.5, 1.0)} == {1}


def test_difficulty_level_rejects_bad_inputs():
    with pytest.raises(ValueError, match="pass rate"):
        difficulty_level(1.5, 3)
    with pytest.raises(ValueError, match="levels"):
        difficulty_level(0.5, 0)


def test_counts_to_labels_to_rows_hand_counts():
    labels = labels_from_counts([SampleCount(8, 8), SampleCount(5, 8), SampleCount(2, 8), SampleCount(0, 8)], 3)
    # failure 0, 3/8, 6/8, 1 -> x3 = 0, 1.125, 2.25, 3 -> levels 1, 2, 3, 3
    assert labels == [Label(1.0, 1), Label(0.625, 2), Label(0.25, 3), Label(0.0, 3)]
    rows = label_rows(ROWS, LABELS, "difficulty", "pass_rate")
    assert [list(r) for r in rows] == [["id", "question", "answer", "difficulty", "source", "pass_rate"],
                                        ["id", "question", "answer", "source", "difficulty", "pass_rate"],
                                        ["id", "question", "answer", "note", "difficulty", "pass_rate"]]
    assert [(r["id"], r["difficulty"], r["pass_rate"]) for r in rows] == [("a", 1, 1.0), ("b", 2, 0.5), ("c", 3, 0.0)]
    assert rows[0]["source"] == "x" and rows[2]["note"] is None and ROWS[0]["difficulty"] == 9  # input untouched
    with pytest.raises(ValueError, match="correct <= samples"):
        labels_from_counts([SampleCount(3, 2)], 3)
    with pytest.raises(ValueError, match="2 labels"):
        label_rows(ROWS, LABELS[:2], "difficulty", "pass_rate")


def test_summarize_per_level():
    s = summarize([Label(1.0, 1), Label(0.75, 1), Label(0.0, 3)], 3)
    assert s.problems == {1: 2, 2: 0, 3: 1} and s.mean_pass_rate == {1: 0.875, 3: 0.0}
    assert s.overall_pass_rate == pytest.approx(1.75 / 3)


def test_output_path_default_and_refusals(tmp_path):
    src = tmp_path / "p.jsonl"
    assert output_path(src, None, False) == tmp_path / "p.difficulty.jsonl"
    assert output_path(src, None, True) == tmp_path / "p.difficulty.jsonl"  # overwrite alone never means the input
    assert output_path(src, str(src), True) == src
    with pytest.raises(ConfigError, match="difficulty.overwrite=true"):
        output_path(src, str(src), False)
    with pytest.raises(ConfigError, match=r"difficulty.out: .*\.jsonl"):
        output_path(src, str(tmp_path / "p.parquet"), False)


def test_difficulty_keys_are_a_section_of_the_one_config():
    from kimi_rl.config.loader import load_config

    cfg = load_config(["data=gsm8k_small", "difficulty.samples=2", "difficulty.overwrite=true"])
    opts = cfg.difficulty
    assert cfg.data.source == "file" and opts.samples == 2 and opts.overwrite is True and opts.levels == 3
    with pytest.raises(ConfigError, match="unknown key 'difficulty.sample'; valid keys here: difficulty.out, "):
        load_config(["difficulty.sample=2"])
    with pytest.raises(ConfigError, match="difficulty.levels: must be >= 1"):
        load_config(["difficulty.levels=0"])
    with pytest.raises(ConfigError, match="difficulty.samples"):
        load_config(["difficulty.samples=many"])


def _write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n\n" for r in rows))  # blank lines are not rows
    elif path.suffix == ".json":
        path.write_text(json.dumps({"version": 2, "data": rows}))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = list(dict.fromkeys(k for r in rows for k in r))  # from_pylist would keep the first row's keys only
        pq.write_table(pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in keys}), path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_labelled_file_round_trips_through_the_loader(tmp_path, suffix):
    src, dst = tmp_path / f"p{suffix}", tmp_path / f"out{suffix}"
    _write(src, ROWS)
    write_labelled_file(src, dst, LABELS, "difficulty", "pass_rate")
    problems = load_problem_file(dst).problems
    assert [(p.uid, p.question, p.difficulty, p.meta["pass_rate"]) for p in problems] == [
        ("out:a", "1+1?", 1, 1.0), ("out:b", "2+2?", 2, 0.5), ("out:c", "3+3?", 3, 0.0)]
    assert [p.meta["source"] for p in problems[:2]] == ["x", "y"]
    if suffix == ".json":
        assert json.loads(dst.read_text())["version"] == 2
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_schema(dst).names == ["id", "question", "answer", "difficulty", "source", "note", "pass_rate"]
    assert not [f for f in tmp_path.iterdir() if ".tmp" in f.name]


class _Scripted:
    """Returns responses[i][j] as sample j of prompt i; records the prompt batches it saw."""

    def __init__(self, responses):
        self.responses, self.calls = responses, []

    def generate(self, prompts, max_new_tokens, n, temperature, top_p, logprobs=True):
        start = sum(self.calls)
        self.calls.append(len(prompts))
        return [[Generation([ord(c) for c in t], [0.0] * len(t), "stop") for t in r]
                for r in self.responses[start : start + len(prompts)]]


class _CharTok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def test_count_correct_batches_and_uses_the_verifier():
    from kimi_rl.rewards import VERIFIERS

    problems = [Problem("a", "2+3", "5", 1), Problem("b", "1+1", "2", 1), Problem("c", "9+9", "18", 1)]
    responses = [[r"\boxed{5}", r"\boxed{5}"], [r"\boxed{2}", r"\boxed{3}"], ["18", r"\boxed{17}"]]
    engine, seen = _Scripted(responses), []
    counts = count_correct(engine, _CharTok(), problems, [[0]] * 3, VERIFIERS.get("arithmetic")(), 2, 1.0, 8,
                           batch_problems=2, progress=seen.append)
    assert counts == [SampleCount(2, 2), SampleCount(1, 2), SampleCount(0, 2)]
    assert engine.calls == [2, 1] and seen == [2, 1]


# ---------------------------------------------------------------- the command (tiny model, hf engine)

UNREACHABLE = [  # a 4-token response cannot hold a 9-digit answer: pass rate 0, the hardest level
    {"question": "What is 1+1?", "answer": "#### 123456789", "tag": "first"},
    {"question": "What is 2+2?", "answer": "#### 987654321", "tag": "second", "difficulty": 1},
    {"question": "What is 3+3?", "answer": "#### 555555555", "tag": "third"},
]


def _words(tmp_path, model_dir, path, *extra):
    return ["rollout=hf", f"model.path={model_dir}", "data.source=file", f"data.path={path}", f"run.dir={tmp_path}",
            "eval.max_response_tokens=4", "difficulty.samples=2", *extra]


def test_cli_difficulty_labels_every_row_and_the_curriculum_sees_them(tmp_path, tiny_model_dir, capsys):
    from kimi_rl.config import DataConfig
    from kimi_rl.rl.sampling import SAMPLERS
    from kimi_rl.tasks import load_task

    src = tmp_path / "hard.jsonl"
    _write(src, UNREACHABLE)
    before = src.read_text()
    assert main(["difficulty", *_words(tmp_path, tiny_model_dir, src)]) == 0
    out = tmp_path / "hard.difficulty.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["tag"] for r in rows] == ["first", "second", "third"] and src.read_text() == before
    assert [(r["difficulty"], r["pass_rate"]) for r in rows] == [(3, 0.0)] * 3
    assert [r["answer"] for r in rows] == [r["answer"] for r in UNREACHABLE]
    printed = capsys.readouterr().out
    assert str(out) in printed and "    3 |        3 |          0.000" in printed
    assert [p.difficulty for p in load_problem_file(out).problems] == [3, 3, 3]
    data = DataConfig(source="file", path=str(out), curriculum=[CurriculumStage(levels=[3])])
    task = load_task(data, 0)
    sampler = SAMPLERS.get("curriculum")([p.difficulty for p in task.train], data, 0)
    assert sampler.stages == [list(range(len(task.train)))]
    with pytest.raises(ValueError, match="'difficulty' is missing while other rows"):  # the input labels 1 of 3
        load_task(DataConfig(source="file", path=str(src)), 0)


def test_cli_difficulty_overwrites_only_when_asked(tmp_path, tiny_model_dir, capsys):
    src = tmp_path / "hard.jsonl"
    _write(src, UNREACHABLE)
    before = src.read_text()
    assert main(["difficulty", *_words(tmp_path, tiny_model_dir, src, f"difficulty.out={src}")]) == 2
    err = capsys.readouterr().err
    assert "difficulty.overwrite=true" in err and src.read_text() == before
    words = _words(tmp_path, tiny_model_dir, src, f"difficulty.out={src}", "difficulty.overwrite=true",
                   "difficulty.levels=5", "difficulty.pass_rate_field=solved")
    assert main(["difficulty", *words]) == 0
    assert [(p.difficulty, p.meta["solved"]) for p in load_problem_file(src).problems] == [(5, 0.0)] * 3


def test_cli_difficulty_needs_a_file_source(tmp_path, tiny_model_dir, capsys):
    assert main(["difficulty", "rollout=hf", f"model.path={tiny_model_dir}", f"run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "data.source=arithmetic" in err and "data.path" in err


def test_cli_difficulty_bad_row_names_the_line(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"answer": "3"}\n')
    assert main(["difficulty", *_words(tmp_path, tiny_model_dir, bad, "data.skip_bad_rows=true")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: line 2" in err and "every row must load" in err and "set data.skip_bad_rows" not in err
    assert not (tmp_path / "bad.difficulty.jsonl").exists()


def test_cli_difficulty_unknown_key(tmp_path, capsys):
    assert main(["difficulty", "difficulty.n=3"]) == 2
    assert "valid keys here: difficulty.out, difficulty.samples" in capsys.readouterr().err
