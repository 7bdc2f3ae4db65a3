"""Verifiers by name: each scores a batch of responses against their problems.

A verifier is a callable ``(responses: list[str], problems: list[Problem]) -> list[float]``.
Heavy ones (math-verify, the code sandbox) are registered lazily.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from kimi_rl.registry import Registry
from kimi_rl.tasks.base import Problem
from kimi_rl.config import ConfigError
from kimi_rl.tasks.arithmetic import verify

Verifier = Callable[[Sequence[str], Sequence[Problem]], list[float]]
VERIFIERS: Registry[Callable[..., Verifier]] = Registry("verifier")
"""Maps a name to a factory ``(**options) -> Verifier``."""


@VERIFIERS.register("arithmetic")
def arithmetic_verifier(**options: object) -> Verifier:
    """Exact integer match of the last ``\\boxed{}`` (the built-in task); it takes no options."""
    if options:
        raise TypeError(f"the arithmetic verifier takes no options, got {sorted(options)}")

    def score(responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        return [verify(r, p.answer) for r, p in zip(responses, problems)]

    return score


VERIFIERS.register_lazy("math", "kimi_rl.rewards.math:math_verifier")
VERIFIERS.register_lazy("code", "kimi_rl.rewards.code:code_verifier")
VERIFIERS.register_lazy("reasoning_gym", "kimi_rl.tasks.reasoning_gym:reasoning_gym_verifier")
VERIFIERS.register_lazy("reward_model", "kimi_rl.rewards.reward_model:reward_model_verifier")


def make_verifier(name: str, options: Mapping[str, Any] | None = None, purpose: str = "eval") -> Verifier:
    """``VERIFIERS.get(name)(**options)``; a bad option is a ConfigError naming ``data.verifier_options``.

    ``purpose``: ``rl`` when the rewards train a policy (which learns any hole: the code verifier then refuses
    a weak sandbox unless ``allow_weak``) or ``eval``; passed to factories that take it."""
    import inspect

    try:
        factory = VERIFIERS.get(name)
    except KeyError as e:
        raise ConfigError(f"data.verifier: {e.args[0]}") from None
    kwargs = dict(options or {})
    try:
        if "purpose" in inspect.signature(factory).parameters and (purpose == "rl" or "purpose" not in kwargs):
            kwargs["purpose"] = purpose  # RL always says so: options cannot turn its checks off
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        pass
    try:
        return factory(**kwargs)
    except (KeyError, TypeError, ValueError) as e:
        detail = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ConfigError(f"data.verifier_options {dict(options or {})} for verifier '{name}': {detail}") from None
