"""curate (k1.5 2.3.1): the easy-to-hack filter on a scripted engine, the curated files, the command (tiny model)."""
from __future__ import annotations

import json

import pytest

from kimi_rl.cli import main
from kimi_rl.config import ConfigError, CurateConfig
from kimi_rl.config.loader import load_config
from kimi_rl.data.curate import Guesses, dropped_rows, guess_answers, output_paths, write_curated_file
from kimi_rl.rollout.types import Generation
from kimi_rl.tasks.base import Problem


class _Scripted:
    """responses[i][j] is sample j of prompt i; records (prompts, max_new_tokens, n, temperature) per call."""

    def __init__(self, responses):
        self.responses, self.calls = responses, []

    def generate(self, prompts, max_new_tokens, n, temperature, top_p, logprobs=True):
        start = sum(len(c[0]) for c in self.calls)
        self.calls.append((prompts, max_new_tokens, n, temperature))
        return [[Generation([ord(c) for c in t], [0.0] * len(t), "stop") for t in r[:n]]
                for r in self.responses[start : start + len(prompts)]]


class _CharTok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def test_one_right_guess_in_n_drops_the_problem():
    from kimi_rl.rewards import VERIFIERS

    problems = [Problem("a", "2+3", "5", 1), Problem("b", "9+9", "18", 1), Problem("c", "1+1", "2", 1)]
    responses = [["4", r"\boxed{6}", r"\boxed{5}", r"\boxed{ 5 }"], ["18", r"\boxed{19}", "1", "8"], [r"\boxed{2}"] * 4]
    engine = _Scripted(responses)
    opts = CurateConfig(tries=4, max_tokens=6, temperature=0.7, batch_problems=2)
    guesses = guess_answers(engine, _CharTok(), problems, [[1], [2], [3]], VERIFIERS.get("arithmetic")(), opts)
    assert guesses == [Guesses(2, 4, r"\boxed{5}"), Guesses(0, 4, None), Guesses(4, 4, r"\boxed{2}")]
    assert [g.easy_to_hack for g in guesses] == [True, False, True]
    assert [(len(p), m, n, t) for p, m, n, t in engine.calls] == [(2, 6, 4, 0.7), (1, 6, 4, 0.7)]
    dropped = dropped_rows(problems, guesses)
    assert [(d["row"], d["id"], d["right_guesses"], d["first_right_guess"]) for d in dropped] == [
        (0, "a", 2, r"\boxed{5}"), (2, "c", 4, r"\boxed{2}")]
    assert dropped[0]["reason"] == "answer guessed without reasoning in 2 of 4 tries"


ROWS = [{"id": "a", "question": "1+1?", "answer": "2", "note": "x"},
        {"id": "b", "question": "2+2?", "answer": "4", "note": "y"},
        {"id": "c", "question": "3+3?", "answer": "6", "note": "z"}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_curated_file_keeps_format_fields_and_order(tmp_path, suffix):
    src = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif suffix == ".json":
        src.write_text(json.dumps({"version": 3, "data": ROWS}))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), src)
    dst = write_curated_file(src, tmp_path / f"out{suffix}", [True, False, True])
    from kimi_rl.data import load_problem_file

    assert [p.uid for p in load_problem_file(dst).problems] == ["out:a", "out:c"]  # uids: <stem>:<id>
    if suffix == ".json":
        assert json.loads(dst.read_text())["version"] == 3
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(dst).to_pylist() == [ROWS[0], ROWS[2]]
    with pytest.raises(ValueError, match="3 rows but 2 decisions"):
        write_curated_file(src, tmp_path / f"bad{suffix}", [True, False])


def test_output_paths_and_config_checks(tmp_path):
    src = tmp_path / "p.jsonl"
    cfg = load_config(["data.source=file", f"data.path={src}"])
    assert output_paths(cfg) == (src, tmp_path / "p.curated.jsonl", tmp_path / "p.curated.report.json")
    with pytest.raises(ConfigError, match="curate.overwrite=true"):
        output_paths(load_config(["data.source=file", f"data.path={src}", f"curate.out={src}"]))
    with pytest.raises(ConfigError, match="must have the input's format"):
        output_paths(load_config(["data.source=file", f"data.path={src}", "curate.out=x.json"]))
    with pytest.raises(ConfigError, match="data.source=arithmetic"):
        output_paths(load_config([]))
    for word, key in (("curate.tries=0", "tries"), ("curate.prompt_template=hi", "prompt_template"),
                      ("curate.temperature=-1", "temperature")):
        with pytest.raises(ConfigError, match=rf"^curate\.{key}: "):
            load_config([word])


# ---------------------------------------------------------------- the command (tiny model, real hf engine)


def test_cli_curate_drops_what_the_model_guesses(tmp_path, tiny_model_dir, capsys):
    """The verifier calls a guess right on rows whose answer is EASY (right by construction), so those rows go."""
    from kimi_rl.rewards import VERIFIERS

    seen = []

    def by_construction():
        def verify(texts, problems):
            seen.extend(texts)
            return [1.0 if p.answer == "EASY" else 0.0 for p in problems]
        return verify

    rows = [{"question": "What is 1+1?", "answer": "EASY", "tag": "first"},
            {"question": "What is 2+2?", "answer": "#### 4", "tag": "second"},
            {"question": "What is 3+3?", "answer": "EASY", "tag": "third"}]
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    VERIFIERS.register("test_by_construction", by_construction)
    try:
        words = ["curate", "rollout=hf", f"model.path={tiny_model_dir}", "data.source=file", f"data.path={src}",
                 "data.verifier=test_by_construction", f"run.dir={tmp_path}", "curate.tries=3", "curate.max_tokens=4"]
        assert main(words) == 0
    finally:
        VERIFIERS.unregister("test_by_construction")
    assert len(seen) == 9 and all(len(t) <= 4 for t in seen)  # 3 tries of <= 4 character tokens per row
    out = tmp_path / "p.curated.jsonl"
    assert [json.loads(line)["tag"] for line in out.read_text().splitlines()] == ["second"]
    report = json.loads((tmp_path / "p.curated.report.json").read_text())
    assert report["rows"] == 3 and report["kept"] == 1
    assert [(d["row"], d["right_guesses"], d["tries"]) for d in report["dropped"]] == [(0, 3, 3), (2, 3, 3)]
    assert report["settings"]["tries"] == 3
    assert "dropped 2 of 3 rows as easy to hack" in capsys.readouterr().out
