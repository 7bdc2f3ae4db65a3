"""k1.5's length reward and its weight schedule (src/rewards/length.py) on hand-computed numbers."""
from __future__ import annotations

import doctest

import pytest

import kimi_rl.rewards.length as length_module
from kimi_rl.rewards.length import len_reward, length_weight


def test_doctests_pass() -> None:
    result = doctest.testmod(length_module)
    assert result.attempted >= 4 and result.failed == 0


def test_equal_lengths_give_zero_for_all() -> None:
    assert len_reward([12, 12, 12], [True, False, True]) == [0.0, 0.0, 0.0]


def test_shortest_correct_gets_half_and_longest_wrong_minus_half() -> None:
    rewards = len_reward([10, 25, 30, 20], [True, True, False, True])
    # lam = 0.5 - (len - 10) / 20 = [0.5, -0.25, -0.5, 0.0]
    assert rewards == [0.5, -0.25, -0.5, 0.0]


def test_wrong_sample_shorter_than_midpoint_gets_zero() -> None:
    # midpoint 20: a wrong sample of length 12 has lam = 0.4 but min(0, lam) = 0
    assert len_reward([10, 12, 30], [True, False, True]) == [0.5, 0.0, -0.5]


def test_wrong_sample_longer_than_midpoint_is_penalised_like_a_correct_one() -> None:
    assert len_reward([10, 25, 30], [True, False, True])[1] == -0.25


def test_mismatched_inputs_and_empty_group() -> None:
    assert len_reward([], []) == []
    with pytest.raises(ValueError, match="3 lengths but 2"):
        len_reward([1, 2, 3], [True, False])


def test_weight_is_zero_during_warmup_then_constant() -> None:
    assert [length_weight(t, 0.3, 3) for t in range(6)] == [0.0, 0.0, 0.0, 0.3, 0.3, 0.3]
    assert length_weight(0, 0.3, 0) == 0.3  # no warm-up


def test_weight_linear_ramp() -> None:
    weights = [length_weight(t, 1.0, 2, "linear", 4) for t in range(9)]
    assert weights == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_weight_errors() -> None:
    with pytest.raises(ValueError, match="'cosine' is not one of constant, linear"):
        length_weight(0, 0.3, 0, "cosine")
    with pytest.raises(ValueError, match="ramp_iterations >= 1"):
        length_weight(5, 0.3, 0, "linear", 0)


def test_score_groups_composes_correctness_length_reward_and_repeat_penalty(tiny_model_dir) -> None:
    """reward_i = r_i + w * len_reward_i (+ repeat_penalty), r_i the verdict of a response that was not cut
    (paper 2.3.3 and 2.6.2), on one hand-computed group (lengths 2..6: lambda = 0.5 - (len - 2) / 4)."""
    from kimi_rl.models.modeling import load_tokenizer
    from kimi_rl.rewards.scoring import score_groups
    from kimi_rl.rollout.types import Group, Trajectory
    from kimi_rl.tasks.base import Problem

    p = Problem(uid="p", question="1+1", answer="2")
    rows = [(2, 1.0, "stop"), (6, 1.0, "stop"), (5, 0.0, "stop"), (4, 1.0, "length"), (3, 0.0, "repeat")]
    group = Group("p@0", p, [Trajectory(group_id="p@0", problem=p, prompt_ids=[1], response_ids=[5] * n,
                                        logprobs=[0.0] * n, versions=[0] * n, finish_reason=reason)
                             for n, _, reason in rows])
    verdicts = [v for _, v, _ in rows]
    stats = score_groups([group], lambda texts, problems: verdicts, load_tokenizer(tiny_model_dir),
                         len_weight=0.5, repeat_penalty=-0.5)
    # lambda: 0.5, -0.5, -0.25, 0, 0.25; correct keeps lambda, wrong min(0, lambda); the cut one is wrong
    assert [t.correct for t in group.trajectories] == [True, True, False, False, False]
    assert [t.reward for t in group.trajectories] == pytest.approx([1.25, 0.75, -0.125, 0.0, -0.5])
    assert (stats.samples, stats.correct, stats.group_success) == (5, 2, [0.4])
    off = score_groups([group], lambda texts, problems: verdicts, load_tokenizer(tiny_model_dir),
                       len_weight=0.0, repeat_penalty=0.0)
    assert [t.reward for t in group.trajectories] == [1.0, 1.0, 0.0, 0.0, 0.0] and off.correct == 2
