"""Problem sources by ``data.source``: the built-in arithmetic task or problem files."""
from __future__ import annotations

from dataclasses import dataclass

from kimi_rl.config import DataConfig
from kimi_rl.tasks.base import Problem


@dataclass
class TaskData:
    train: list[Problem]
    heldout: list[Problem]
    verifier: str
    """Name in the VERIFIERS registry."""
    skipped_rows: int = 0


def load_task(data: DataConfig, seed: int) -> TaskData:
    """Train and held-out problems plus the verifier name, checked before any training."""
    if data.source == "arithmetic":
        from kimi_rl.tasks.arithmetic import make_problems

        train, heldout = make_problems(data.levels, data.train_per_level, data.heldout_per_level, seed)
        return TaskData(train, heldout, "arithmetic")
    raise NotImplementedError(f"data.source '{data.source}' is not wired yet")
