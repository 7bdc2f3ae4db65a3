"""Verifiers by name: each scores a batch of responses against their problems.

A verifier is a callable ``(responses: list[str], problems: list[Problem]) -> list[float]``.
Heavy ones (math-verify, the code sandbox) are registered lazily.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from kimi_rl.registry import Registry
from kimi_rl.tasks.base import Problem

Verifier = Callable[[Sequence[str], Sequence[Problem]], list[float]]
VERIFIERS: Registry[Callable[..., Verifier]] = Registry("verifier")
"""Maps a name to a factory ``(**options) -> Verifier``."""


@VERIFIERS.register("arithmetic")
def arithmetic_verifier(**options: object) -> Verifier:
    """Exact integer match of the last ``\\boxed{}`` (the built-in task); it takes no options."""
    if options:
        raise TypeError(f"the arithmetic verifier takes no options, got {sorted(options)}")
    from kimi_rl.tasks.arithmetic import verify

    def score(responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        return [verify(r, p.answer) for r, p in zip(responses, problems)]

    return score


VERIFIERS.register_lazy("math", "kimi_rl.rewards.math:math_verifier")
VERIFIERS.register_lazy("code", "kimi_rl.rewards.code:code_verifier")


def make_verifier(name: str, options: Mapping[str, Any] | None = None) -> Verifier:
    """``VERIFIERS.get(name)(**options)``; a bad option is a ConfigError naming ``data.verifier_options``."""
    from kimi_rl.config import ConfigError

    try:
        factory = VERIFIERS.get(name)
    except KeyError as e:
        raise ConfigError(f"data.verifier: {e.args[0]}") from None
    try:
        return factory(**dict(options or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"data.verifier_options {dict(options or {})} for verifier '{name}': {e}") from None
