"""Problem sources by ``data.source``: the built-in arithmetic task, problem files, packaged sets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kimi_rl.config import ConfigError, DataConfig
from kimi_rl.tasks.base import Problem

DEFAULT_VERIFIER = {"arithmetic": "arithmetic", "file": "math", "math500": "math", "aime2024": "math",
                    "aime2025": "math", "humaneval": "code"}


@dataclass
class TaskData:
    train: list[Problem]
    heldout: list[Problem]
    verifier: str
    """Name in the VERIFIERS registry."""
    skipped_rows: int = 0


def _split(problems: list[Problem], data: DataConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    from kimi_rl.data import split_heldout

    if len(problems) < 2:
        return problems, problems
    split = split_heldout(problems, data.heldout_fraction, seed)
    return list(split.train), list(split.heldout)


def _load_rows(data: DataConfig) -> tuple[list[Problem], int]:
    if data.source == "file":
        from kimi_rl.data import load_problem_file

        if not Path(data.path).is_file():
            raise ConfigError(f"data.path: '{data.path}' does not exist")
        if data.verifier == "code":
            from kimi_rl.tasks.code import load_code_problems

            res = load_code_problems(data.path, data.question_field, skip_bad_rows=data.skip_bad_rows)
            return list(res.problems), len(res.skipped)
        else:
            res = load_problem_file(data.path, data.question_field, data.answer_field, data.difficulty_field,
                                    skip_bad_rows=data.skip_bad_rows)
        return list(res.problems), res.skipped
    if data.source == "humaneval":
        from kimi_rl.tasks.code import load_humaneval

        return list(load_humaneval()), 0
    from kimi_rl.data import load_mmath

    res = load_mmath(data.source)
    return list(res.problems), res.skipped


def load_task(data: DataConfig, seed: int) -> TaskData:
    """Train and held-out problems plus the verifier name, checked before any training."""
    verifier = data.verifier or DEFAULT_VERIFIER[data.source]
    if data.source == "arithmetic":
        from kimi_rl.tasks.arithmetic import make_problems

        train, heldout = make_problems(data.levels, data.train_per_level, data.heldout_per_level, seed)
        return TaskData(train, heldout, verifier)
    problems, skipped = _load_rows(data)
    if not problems:
        raise ConfigError(f"data.source={data.source}: no usable problems ({skipped} rows skipped)")
    if data.source in ("math500", "aime2024", "aime2025", "humaneval"):
        return TaskData(problems, problems, verifier, skipped)  # benchmarks: evaluate on all of them
    train, heldout = _split(problems, data, seed)
    return TaskData(train, heldout, verifier, skipped)
