"""Verifiers by name: each scores a batch of responses against their problems.

A verifier is a callable ``(responses: list[str], problems: list[Problem]) -> list[float]``.
Heavy ones (math-verify, the code sandbox) are registered lazily.
"""
from __future__ import annotations

from typing import Callable, Sequence

from kimi_rl.registry import Registry
from kimi_rl.tasks.base import Problem

Verifier = Callable[[Sequence[str], Sequence[Problem]], list[float]]
VERIFIERS: Registry[Callable[..., Verifier]] = Registry("verifier")
"""Maps a name to a factory ``(**options) -> Verifier``."""


@VERIFIERS.register("arithmetic")
def arithmetic_verifier(**_: object) -> Verifier:
    """Exact integer match of the last ``\\boxed{}`` (the built-in task)."""
    from kimi_rl.tasks.arithmetic import verify

    def score(responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        return [verify(r, p.answer) for r, p in zip(responses, problems)]

    return score


VERIFIERS.register_lazy("math", "kimi_rl.rewards.math:math_verifier")
VERIFIERS.register_lazy("code", "kimi_rl.rewards.code:code_verifier")
