"""What every task provides: problems with a reference answer and a difficulty (a leaf module: the data readers
and the tasks both build ``Problem``s, neither imports the other for it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


UNLABELLED = 0
"""``Problem.difficulty`` of a row whose file labels other rows but not this one (with
``data.skip_bad_rows``): curriculum stages all include it, so it is sampled whatever the stage."""


@dataclass(frozen=True)
class Problem:
    """One prompt of the RL data. ``uid`` is stable across runs (sampler state keys on it)."""

    uid: str
    question: str
    answer: str
    """Reference answer text (a number, LaTeX, ...); task-specific data goes in ``meta``."""
    difficulty: int = 1
    """Difficulty level (1 = easiest); ``UNLABELLED`` (0) for a row missing its label in a labelled file."""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Task-specific extras, e.g. a code problem's test cases and limits."""
