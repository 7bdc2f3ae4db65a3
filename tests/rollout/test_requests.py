"""Per-call budgets, request seeds and RNG preservation shared by the rollout engines."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kimi_rl.rollout.requests import call_seed, check_sampling, preserved_rng, prompt_budgets


def test_budgets_shared_per_prompt_and_cut_at_max_model_len():
    prompts = [[1, 2], [1, 2, 3, 4, 5, 6, 7, 8], [1]]
    assert prompt_budgets(5, prompts, max_model_len=10) == [5, 2, 5]
    assert prompt_budgets([1, 9, 20], prompts, max_model_len=10) == [1, 2, 9]


@pytest.mark.parametrize("budgets, prompts, message", [
    ([3], [[1], [2]], "1 budgets for 2 prompts"),
    (4, [[1], []], "prompt 1 is empty"),
    (4, [[1] * 10], "prompt 0 has 10 tokens, no room under max_model_len=10"),
    ([4, 0], [[1], [2]], "max_new_tokens for prompt 1 is 0"),
])
def test_budget_errors_name_the_prompt(budgets, prompts, message):
    with pytest.raises(ValueError, match=message):
        prompt_budgets(budgets, prompts, max_model_len=10)


def test_call_seed_depends_only_on_seed_and_call():
    seeds = [call_seed(7, call) for call in range(50)]
    assert [call_seed(7, call) for call in range(50)] == seeds
    assert len(set(seeds)) == 50 and all(0 <= s < 2**31 for s in seeds)
    assert call_seed(8, 0) != seeds[0]


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def draw_all() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_preserved_rng_puts_every_generator_back():
    seed_all(11)
    expected = draw_all()
    seed_all(11)
    with preserved_rng():
        seed_all(0)  # what vllm.LLM(seed=0) does
        draw_all()
    assert draw_all() == expected


@pytest.mark.parametrize("n, temperature, top_p, message", [
    (0, 1.0, 1.0, "n .* must be >= 1"), (1, -0.1, 1.0, "temperature"), (1, 1.0, 0.0, "top_p")])
def test_check_sampling_rejects_bad_values(n, temperature, top_p, message):
    with pytest.raises(ValueError, match=message):
        check_sampling(n, temperature, top_p)
