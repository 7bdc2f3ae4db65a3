"""What both engines do to a ``generate`` call before sampling: budgets, seeds, checks, RNG care.

Not in the paper: a seed per call from (run seed, call counter) makes rollouts reproducible and
the trainer's global RNG is left untouched, so a resumed run samples what a continuous one did.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from kimi_rl.rng import capture_rng, restore_rng

_SEED_BITS = 31
"""Call seeds are non-negative 31-bit integers (fit every seed argument)."""


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the body, then put python/numpy/torch global RNG states back as they were.

    ``vllm.LLM(seed=...)`` reseeds all three, and vLLM's CPU sampler draws from torch's
    global generator on every step; the trainer must see neither.
    """
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


def call_seed(seed: int, call: int) -> int:
    """The sampling seed of engine call number ``call``: a pure function of (run seed, call).

    An engine seeds torch's generators with it for the call (inside ``preserved_rng``), so the
    same sequence of calls samples the same tokens, whatever else the process drew.
    """
    state = np.random.SeedSequence([seed, call]).generate_state(1, dtype=np.uint32)
    return int(state[0]) >> (32 - _SEED_BITS)


def prompt_budgets(max_new_tokens: int | list[int], prompts: list[list[int]], max_model_len: int) -> list[int]:
    """New-token budget of each prompt: its own (or the shared) budget, cut at ``max_model_len``.

    ``budget_i = min(max_new_tokens_i, max_model_len - len(prompt_i))``; raises on empty or
    too-long prompts and on budgets below 1, naming the prompt.
    """
    if isinstance(max_new_tokens, int):
        wanted = [max_new_tokens] * len(prompts)
    else:
        wanted = list(max_new_tokens)
        if len(wanted) != len(prompts):
            raise ValueError(f"max_new_tokens has {len(wanted)} budgets for {len(prompts)} prompts")
    budgets = []
    for i, (prompt, want) in enumerate(zip(prompts, wanted)):
        if not prompt:
            raise ValueError(f"prompt {i} is empty: an engine needs at least one prompt token")
        if len(prompt) >= max_model_len:
            raise ValueError(f"prompt {i} has {len(prompt)} tokens, no room under max_model_len={max_model_len}")
        if want < 1:
            raise ValueError(f"max_new_tokens for prompt {i} is {want}; it must be >= 1")
        budgets.append(min(want, max_model_len - len(prompt)))
    return budgets


def check_sampling(n: int, temperature: float, top_p: float) -> None:
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
