"""Procedural reasoning tasks from the ``reasoning-gym`` package (offline), scored by each task's own ``score_answer``.

Departs from the paper (whose RL prompts are curated, human-written problems): problems are generated offline; a
difficulty level is a setting of the task's own knobs (``data.rg_levels``, or the package's curriculum attributes);
the reward is binary by default (the task's score must be 1), as the paper's r in {0, 1}.
"""
from __future__ import annotations

import difflib
import re
import zlib
from dataclasses import fields
from typing import Any, Mapping, Sequence

from kimi_rl.config import ConfigError, DataConfig
from kimi_rl.tasks.base import Problem
from kimi_rl.rewards.math import last_boxed

ANSWER_FORMATS = {
    "answer_tags": "Reason step by step, then give only the final answer between <answer> and </answer> tags.",
    "boxed": "Reason step by step, then give only the final answer within \\boxed{}.",
    "last_number": "Reason step by step, then end your reply with the final answer as a number.",
}
"""``data.rg_answer_format`` -> the instruction appended to every question; ``extract_answer`` reads that format."""
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?")
"""A number as written in a reply: optional minus sign, digits with optional thousands commas and decimals."""
TRIES_PER_PROBLEM = 4
"""Generated entries tried per wanted problem before a small problem space is taken as exhausted."""


def _registry() -> tuple[dict[str, tuple[type, type]], dict[str, type]]:
    from reasoning_gym.factory import CURRICULA, DATASETS

    return DATASETS, CURRICULA


def check_task_name(name: str, key: str = "data.rg_tasks") -> None:
    """A ConfigError naming ``key`` and the closest valid names when ``name`` is no reasoning-gym task."""
    datasets, _ = _registry()
    if name not in datasets:
        close = difflib.get_close_matches(name, datasets, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"valid names: {', '.join(sorted(datasets))}"
        raise ConfigError(f"{key}: unknown reasoning-gym task '{name}'; {hint}")


def level_count(task: str, data: DataConfig) -> int:
    """Difficulty levels of ``task``: its ``data.rg_levels`` entries, else the most levels of one of its curriculum
    attributes, else 1 (the task's settings as given)."""
    if task in data.rg_levels:
        return len(data.rg_levels[task])
    _, curricula = _registry()
    if task not in curricula:
        return 1
    return max(len(a.levels) for a in curricula[task]().attributes.values())


def level_settings(task: str, level: int, data: DataConfig) -> tuple[dict[str, Any], str]:
    """The task's config kwargs at ``level`` and the key that set them: curriculum attributes at their
    ``level``-th value (each at its own top when it has fewer), overridden by ``data.rg_settings.<task>``, then by
    ``data.rg_levels.<task>[level - 1]``."""
    k = level_count(task, data)
    if level > k:
        raise ConfigError(f"data.levels: level {level} is beyond the {k} difficulty level(s) of reasoning-gym task "
                          f"'{task}'; list at most {k}, or give data.rg_levels.{task} more entries")
    settings: dict[str, Any] = {}
    key = f"data.rg_settings.{task}"
    _, curricula = _registry()
    if task not in data.rg_levels and task in curricula:
        from reasoning_gym.coaching.base_curriculum import DefaultCurriculumContext, RangeAttributeMode

        curriculum = curricula[task]()
        curriculum.set_global_level(level - 1)
        context = DefaultCurriculumContext(mode=RangeAttributeMode.UPPER_BOUND)  # this level only, not 1..level
        cfg = curriculum.generate_configuration({}, context)
        names = {getattr(a, n) for a in curriculum.attributes.values()
                 for n in ("lower_field_name", "upper_field_name", "field_name") if getattr(a, n, None)}
        settings = {n: getattr(cfg, n) for n in names}
    settings.update(_checked(task, data.rg_settings.get(task) or {}, key))
    if task in data.rg_levels:
        key = f"data.rg_levels.{task}[{level - 1}]"
        settings.update(_checked(task, data.rg_levels[task][level - 1], key))
    return settings, key


def _checked(task: str, settings: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``settings`` when each names a field of the task's config, else a ConfigError naming ``key.<name>``."""
    datasets, _ = _registry()
    valid = {f.name for f in fields(datasets[task][1])} - {"seed", "size"}
    for name in settings:
        if name not in valid:
            raise ConfigError(f"{key}.{name}: not a setting of reasoning-gym task '{task}'; valid: "
                              f"{', '.join(sorted(valid))}")
    return settings


def _dataset(task: str, settings: Mapping[str, Any], key: str) -> Any:
    """``reasoning_gym.create_dataset``; settings the task rejects are a one-line ConfigError naming ``key``."""
    from reasoning_gym import create_dataset

    try:
        return create_dataset(task, **settings)
    except Exception as e:  # the task's own validate(): assert / ValueError / TypeError with its message
        detail = " ".join(str(e).split()) or type(e).__name__
        shown = {k: v for k, v in settings.items() if k not in ("seed", "size")}
        raise ConfigError(f"{key}: reasoning-gym task '{task}' rejects {shown}: {detail}") from None


def _level_problems(task: str, level: int, data: DataConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Distinct questions of one task and level, held-out first: up to ``heldout_per_level`` held out (at most a
    fifth of a small problem space) and ``train_per_level`` for training, never the same question in both."""
    settings, key = level_settings(task, level, data)
    want = data.heldout_per_level + data.train_per_level
    settings.update(seed=zlib.crc32(f"{seed}/{task}/{level}".encode()), size=want * TRIES_PER_PROBLEM)
    ds = _dataset(task, settings, key)
    seen: set[str] = set()
    entries = []
    for i in range(len(ds)):
        entry = ds[i]
        if entry["question"] not in seen:
            seen.add(entry["question"])
            entries.append((i, entry))
            if len(entries) == want:
                break
    if len(entries) < 2:
        raise ConfigError(f"{key}: level {level} of reasoning-gym task '{task}' yields {len(entries)} distinct "
                          f"question(s); widen its settings or drop the level from data.levels")
    n_held = data.heldout_per_level if len(entries) == want else min(data.heldout_per_level, max(1, len(entries) // 5))
    fmt = data.rg_answer_format
    if fmt == "last_number":
        for _, e in entries:
            if NUMBER.fullmatch(str(e["answer"]).strip()) is None:
                raise ConfigError(f"data.rg_answer_format: last_number reads a number, but reasoning-gym task "
                                  f"'{task}' (level {level}) has the answer {str(e['answer'])[:60]!r}; use answer_tags "
                                  f"or boxed for it")
    problems = [Problem(uid=f"rg/{task}/L{level}/{i}", question=f"{e['question'].rstrip()}\n\n{ANSWER_FORMATS[fmt]}",
                        answer="" if e["answer"] is None else str(e["answer"]), difficulty=level,
                        meta={"task": task, "settings": dict(settings), "entry": e, "answer_format": fmt})
                for i, e in entries]
    return problems[n_held:], problems[:n_held]


def make_problems(data: DataConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Deterministic, disjoint train and held-out problems for every task of ``data.rg_tasks`` and level of
    ``data.levels``; ``data.rg_seed`` (else ``seed``, the run's) fixes them."""
    base = seed if data.rg_seed is None else data.rg_seed
    for task in data.rg_tasks:
        check_task_name(task)
    for section in ("rg_settings", "rg_levels"):  # a typo there would silently leave a task at its defaults
        for task in getattr(data, section):
            check_task_name(task, f"data.{section}")
    train: list[Problem] = []
    heldout: list[Problem] = []
    for task in data.rg_tasks:
        for level in data.levels:
            t, h = _level_problems(task, level, data, base)
            train += t
            heldout += h
    return train, heldout


def extract_answer(response: str, answer_format: str = "answer_tags") -> str | None:
    """The stripped final answer of ``response`` in the format its question asked for, or None.

    >>> extract_answer("3 + 4 = 7 <answer>7</answer> no: <answer> 8 </answer>")
    '8'
    >>> extract_answer(r"so \\boxed{ {1, 2} }", "boxed")
    '{1, 2}'
    >>> extract_answer("7 - 4 = 3, so the total is 1,203.", "last_number")
    '1203'
    """
    if answer_format == "boxed":
        found = last_boxed(response)
        return None if found is None else found.strip()
    if answer_format == "last_number":  # the reply's last number, for tasks whose answers are numbers
        found = NUMBER.findall(response)
        return found[-1].replace(",", "") if found else None
    from reasoning_gym.utils import extract_answer as rg_extract

    return rg_extract(response)


class ReasoningGymVerifier:
    """Scores a response with its problem's task ``score_answer`` on the final answer in the format its question
    states (``meta["answer_format"]``: between ``<answer>`` tags, in ``\\boxed{}``, or the reply's last number).

    ``binary``: 1.0 when the task scores the answer 1, else 0.0 (the paper's r in {0, 1}); false keeps the task's
    partial credit (e.g. the default scorer's len(oracle) / len(answer) when the answer contains the oracle).
    Picklable: the per-task dataset cache is rebuilt after unpickling.
    """

    def __init__(self, binary: bool = True) -> None:
        if not isinstance(binary, bool):
            raise TypeError(f"binary must be true or false, got {binary!r}")
        self.binary = binary
        self._datasets: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"binary": self.binary, "_datasets": {}}

    def _scorer(self, meta: Mapping[str, Any]) -> Any:
        key = f"{meta['task']}:{sorted(meta['settings'].items())!r}"
        if key not in self._datasets:
            from reasoning_gym import create_dataset

            self._datasets[key] = create_dataset(meta["task"], **meta["settings"])
        return self._datasets[key]

    def score(self, response: str, problem: Problem) -> float:
        answer = extract_answer(response, problem.meta.get("answer_format", "answer_tags"))
        if answer is None:
            return 0.0
        try:
            s = float(self._scorer(problem.meta).score_answer(answer, problem.meta["entry"]))
        except Exception:  # a scorer choking on a malformed answer scores it wrong
            return 0.0
        return float(s >= 1.0) if self.binary else min(max(s, 0.0), 1.0)

    def __call__(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        return [self.score(r, p) for r, p in zip(responses, problems)]


def reasoning_gym_verifier(binary: bool = True) -> ReasoningGymVerifier:
    """The ``reasoning_gym`` verifier factory (``data.verifier_options: {binary: true}``)."""
    return ReasoningGymVerifier(binary)
