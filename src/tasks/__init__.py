"""Problem sources by ``data.source``: the built-in arithmetic task, problem files, packaged sets.

Rows left out (``data.skip_bad_rows``) are kept as ``SkippedRow`` records so a run can say how many, why and where.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from kimi_rl.config import ConfigError, DataConfig
from kimi_rl.registries import SOURCES
from kimi_rl.data import load_mmath, load_problem_file, split_heldout
from kimi_rl.data.files import DataFileError, ImageColumn, SkippedRow
from kimi_rl.data.prompts import build_prompt, encode_prompts
from kimi_rl.tasks.arithmetic import make_problems
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.code import load_code_problems, load_humaneval


TOO_LONG = "prompt too long"
"""The skip reason of a row whose prompt leaves the model no room for a response."""


@dataclass
class TaskData:
    train: list[Problem]
    heldout: list[Problem]
    verifier: str
    """Name in the VERIFIERS registry."""
    skipped: list[SkippedRow] = field(default_factory=list)
    """Rows left out with ``data.skip_bad_rows``: malformed, or a prompt longer than the model allows."""
    rows: int = 0
    """Rows the source had (kept + skipped)."""

    @property
    def skipped_rows(self) -> int:
        return len(self.skipped)

    def skip_counts(self) -> dict[str, int]:
        """Skipped rows per reason, most frequent first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def skip_metrics(self) -> dict[str, float]:
        """The counts as TensorBoard scalars: ``data/skipped_rows`` and ``data/skipped_rows/<reason>``."""
        out = {"data/skipped_rows": float(len(self.skipped))}
        for reason, n in self.skip_counts().items():
            out[f"data/skipped_rows/{re.sub(r'[^A-Za-z0-9]+', '_', reason).strip('_')}"] = float(n)
        return out

    def skip_report(self) -> dict[str, Any]:
        """What ``<run>/skipped_rows.json`` holds: totals, counts per reason and every skipped row."""
        return {"rows": self.rows, "kept": self.rows - len(self.skipped), "skipped": len(self.skipped),
                "by_reason": self.skip_counts(), "skipped_rows": [s._asdict() for s in self.skipped]}

    def skip_summary(self, examples: int = 5) -> list[str]:
        """Lines for the console: the count per reason, then the first ``examples`` rows as ``file:line: why``."""
        if not self.skipped:
            return []
        counts = ", ".join(f"{n} {reason}" for reason, n in self.skip_counts().items())
        lines = [f"data: skipped {len(self.skipped)} of {self.rows} rows (data.skip_bad_rows=true): {counts}"]
        lines += [f"  {s.where}: {s.detail}" for s in self.skipped[:examples]]
        if len(self.skipped) > examples:
            lines.append(f"  ... and {len(self.skipped) - examples} more")
        return lines


@dataclass(frozen=True)
class PromptLimit:
    """The longest prompt a run can take: the model's context minus the longest response it asks for."""

    tokenizer: Any
    max_tokens: int
    why: str
    """How ``max_tokens`` came about, e.g. ``model.max_position_embeddings=1024 - rollout.max_response_tokens=320``."""


def _split(problems: list[Problem], data: DataConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    if len(problems) < 2:
        return problems, problems
    split = split_heldout(problems, data.heldout_fraction, seed)
    return list(split.train), list(split.heldout)


def _code_skip(message: str) -> SkippedRow:
    """A code loader's skip message (``<file:line>: <what>``) as a SkippedRow; the reason is the text before
    any details in parentheses, after ``;`` or after ``, got``."""
    where, _, what = message.partition(": ")
    reason = re.split(r" \(|; |, got ", what or message, maxsplit=1)[0]
    return SkippedRow(where if what else "", reason, what or message)


def drop_long_prompts(problems: Sequence[Problem], data: DataConfig, limit: PromptLimit,
                      where: dict[str, str]) -> tuple[list[Problem], list[SkippedRow]]:
    """Problems whose prompt fits ``limit`` and the skipped rest; without ``data.skip_bad_rows`` a
    too-long prompt is a DataFileError naming its row. Only prompts that might be too long are tokenized:
    a prompt has at most the empty prompt's tokens + 2 per byte of the question (+ slack)."""
    base = len(build_prompt("", data.prompt_template, limit.tokenizer, data.use_chat_template))
    maybe = [p for p in problems if base + 2 * len(p.question.encode()) + 8 > limit.max_tokens]
    too_long = {p.uid: len(ids) for p, ids in zip(maybe, encode_prompts(maybe, limit.tokenizer, data))
                if len(ids) > limit.max_tokens}
    if not too_long:
        return list(problems), []
    skipped = []
    for p in problems:
        if p.uid in too_long:
            detail = (f"prompt of {too_long[p.uid]} tokens; the model leaves {limit.max_tokens} for a prompt "
                      f"({limit.why})")
            skipped.append(SkippedRow(where.get(p.uid, p.uid), TOO_LONG, detail))
    if not data.skip_bad_rows:
        first = skipped[0]
        more = f" ({len(skipped)} rows are too long)" if len(skipped) > 1 else ""
        raise DataFileError(f"{first.where}: {first.detail}{more}; shorten it, lower rollout.max_response_tokens, "
                            f"or set data.skip_bad_rows=true to skip such rows")
    return [p for p in problems if p.uid not in too_long], skipped


@dataclass(frozen=True)
class Source:
    """A ``data.source``: how its problems load, and the verifier that checks them unless ``data.verifier`` says."""

    load: Callable[[DataConfig, int], tuple[list[Problem], list[SkippedRow], dict[str, str]]]
    """(problems, skipped rows, ``file:line`` of each problem by uid) of a file-like source; for a generated one
    (``split`` None), ``(train, heldout)`` made per level, deterministic and disjoint."""
    verifier: str
    split: str | None = "heldout_fraction"
    """How train and held-out are made: heldout_fraction (``data.heldout_fraction`` of the rows) | all (a
    benchmark: both are every problem) | None (the source generates both)."""


def _arithmetic(data: DataConfig, seed: int):
    return make_problems(data.levels, data.train_per_level, data.heldout_per_level, seed)


def _vision_arithmetic(data: DataConfig, seed: int):
    from kimi_rl.tasks import vision  # imports Pillow on use

    return vision.make_problems(data.levels, data.train_per_level, data.heldout_per_level, seed)


def _reasoning_gym(data: DataConfig, seed: int):
    # imported on use: it needs the reasoning-gym package and math-verify, which the code sandbox's Python
    # (importing kimi_rl.tasks for Problem) need not have
    from kimi_rl.tasks import reasoning_gym

    return reasoning_gym.make_problems(data, seed)


def _file(data: DataConfig, seed: int):
    if not Path(data.path).is_file():
        raise ConfigError(f"data.path: '{data.path}' does not exist")
    if data.verifier == "code":
        res = load_code_problems(data.path, data.question_field, skip_bad_rows=data.skip_bad_rows)
        where = {p.uid: str(p.meta.get("source", p.uid)) for p in res.problems}
        return list(res.problems), [_code_skip(m) for m in res.skipped], where
    images = ImageColumn(data.image_field, (data.image_min_side, data.image_max_side)) if data.image_field else None
    loaded = load_problem_file(data.path, data.question_field, data.answer_field, data.difficulty_field,
                               skip_bad_rows=data.skip_bad_rows, images=images)
    return list(loaded.problems), list(loaded.skipped_rows), dict(loaded.locations)


def _humaneval(data: DataConfig, seed: int):
    return list(load_humaneval()), [], {}


def _mmath(data: DataConfig, seed: int):
    res = load_mmath(data.source)
    return list(res.problems), list(res.skipped_rows), dict(res.locations)


ARITHMETIC = Source(_arithmetic, "arithmetic", split=None)
VISION_ARITHMETIC = Source(_vision_arithmetic, "arithmetic", split=None)
REASONING_GYM = Source(_reasoning_gym, "reasoning_gym", split=None)
FILE = Source(_file, "math")
MMATH = Source(_mmath, "math", split="all")
HUMANEVAL = Source(_humaneval, "code", split="all")
"""The built-in sources, registered by name in ``kimi_rl.registries.SOURCES``."""
DEFAULT_VERIFIER = {name: SOURCES.get(name).verifier for name in SOURCES.names()}
"""``data.source`` -> the verifier used when ``data.verifier`` is null."""


def heldout_verifier(data: DataConfig, eval_verifier: str | None) -> tuple[str, dict]:
    """The verifier of held-out accuracy and its options: ``eval.verifier``, else the reward's verifier
    (``data.verifier`` or the source's), except that a ``reward_model`` reward is replaced by the source's rule so
    held-out numbers stay the truth. Options: ``data.verifier_options`` when the name is the reward's, else none.

    >>> heldout_verifier(DataConfig(verifier="reward_model", verifier_options={"kind": "cot"}), None)
    ('arithmetic', {})
    """
    source_rule = SOURCES.get(data.source).verifier
    reward = data.verifier or source_rule
    name = eval_verifier or (source_rule if reward == "reward_model" else reward)
    return name, (dict(data.verifier_options) if name == reward else {})


def load_task(data: DataConfig, seed: int, prompt_limit: PromptLimit | None = None) -> TaskData:
    """Train and held-out problems plus the verifier name, checked before any training. With ``prompt_limit``,
    a row whose prompt leaves the model no room for a response is an error (or skipped and counted)."""
    source = SOURCES.get(data.source)
    verifier = data.verifier or source.verifier
    if source.split is None:  # generated: split per level, deterministic and disjoint
        train, heldout = source.load(data, seed)
        skipped: list[SkippedRow] = []
        if prompt_limit is not None:
            train, skip_train = drop_long_prompts(train, data, prompt_limit, {})
            heldout, skip_held = drop_long_prompts(heldout, data, prompt_limit, {})
            skipped = skip_train + skip_held
            if not train or not heldout:
                raise ConfigError(f"data.levels: no problem fits the model ({skipped[0].detail})")
        return TaskData(train, heldout, verifier, skipped, len(train) + len(heldout) + len(skipped))
    problems, skipped, where = source.load(data, seed)
    rows = len(problems) + len(skipped)
    if prompt_limit is not None and problems:
        problems, too_long = drop_long_prompts(problems, data, prompt_limit, where)
        skipped += too_long
    if not problems:
        raise ConfigError(f"data.source={data.source}: no usable problems ({len(skipped)} rows skipped"
                          + (f"; first: {skipped[0].where}: {skipped[0].detail})" if skipped else ")"))
    if source.split == "all":
        return TaskData(problems, problems, verifier, skipped, rows)  # benchmarks: evaluate on all of them
    train, heldout = _split(problems, data, seed)
    return TaskData(train, heldout, verifier, skipped, rows)
