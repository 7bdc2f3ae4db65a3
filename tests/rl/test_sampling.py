"""Prompt samplers (src/rl/sampling.py): priorities, curriculum stages, state round trip, cross-rank merge."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from kimi_rl.config import CurriculumStage, DataConfig
from kimi_rl.rl.sampling import (
    SAMPLERS,
    PrioritizedSampler,
    merge_success_across_ranks,
    stage_at,
    weighted_sample,
)


def make(name: str, difficulties: list[int], seed: int = 0, **data: object):
    return SAMPLERS.get(name)(difficulties, DataConfig(sampler=name, **data), seed)


def test_registry_names_and_unknown_name() -> None:
    assert SAMPLERS.names() == ["curriculum", "curriculum_prioritized", "prioritized", "uniform"]
    with pytest.raises(KeyError, match="valid names: curriculum, curriculum_prioritized, prioritized, uniform"):
        SAMPLERS.get("random")


def test_prioritized_frequencies_follow_one_minus_success_rate() -> None:
    sampler = make("prioritized", [1, 1, 1, 1], seed=0, priority_floor=0.05)
    sampler.update([0, 1, 2, 3], [0.0, 0.5, 0.75, 1.0])  # weights 1, 0.5, 0.25, floor 0.05
    draws = 20000
    counts = Counter(i for _ in range(draws) for i in sampler.draw(1, iteration=0))
    expected = [1 / 1.8, 0.5 / 1.8, 0.25 / 1.8, 0.05 / 1.8]
    for i, p in enumerate(expected):
        assert abs(counts[i] / draws - p) < 0.015, (i, counts[i] / draws, p)  # ~4 standard errors


def test_floor_keeps_solved_problems_and_prior_is_replaced_by_first_observation() -> None:
    sampler = make("prioritized", [1, 1, 1], priority_floor=0.1, priority_prior=0.5, success_rate_momentum=0.5)
    assert sampler.weight(0) == 0.5  # never seen: 1 - prior
    sampler.update([0, 1], [1.0, 1.0])
    assert sampler.success_rate == {0: 1.0, 1: 1.0}  # replaced, not averaged with the prior
    assert sampler.weight(0) == 0.1  # floor
    sampler.update([0], [0.0])
    assert sampler.success_rate[0] == 0.5  # 0.5 * 1 + 0.5 * 0
    seen = Counter(i for _ in range(300) for i in sampler.draw(1, iteration=0))
    assert seen[1] > 0  # solved (weight = floor) still drawn


def test_repeated_index_in_one_update_is_averaged_first() -> None:
    sampler = make("uniform", [1, 1], success_rate_momentum=0.5)
    sampler.update([0], [1.0])
    sampler.update([0, 0, 0, 0], [1.0, 0.0, 0.0, 0.0])  # batch success 0.25
    assert sampler.success_rate[0] == 0.625


def test_draw_is_without_replacement_when_possible() -> None:
    sampler = make("uniform", [1] * 6)
    assert sorted(sampler.draw(6, iteration=0)) == list(range(6))
    counts = Counter(sampler.draw(9, iteration=0))
    assert set(counts) == set(range(6)) and max(counts.values()) == 2


def test_weighted_sample_puts_zero_weights_last() -> None:
    picks = weighted_sample([0.0, 1.0, 0.0, 2.0], 3, random.Random(0))
    assert set(picks[:2]) == {1, 3} and picks[2] in (0, 2)


def test_stage_at() -> None:
    stages = [CurriculumStage(2, [1]), CurriculumStage(3, [2]), CurriculumStage(0, [3])]
    assert [stage_at(stages, t) for t in range(7)] == [0, 0, 1, 1, 1, 2, 2]
    assert stage_at([], 5) == 0


def test_curriculum_uniform_then_hard_only() -> None:
    stages = [CurriculumStage(iterations=2, levels=[]), CurriculumStage(iterations=0, levels=[3])]
    sampler = make("curriculum", [1, 1, 2, 2, 3, 3], curriculum=stages)
    assert sorted(sampler.draw(6, iteration=1)) == [0, 1, 2, 3, 4, 5]  # stage 0: all levels
    assert set(sampler.draw(4, iteration=2)) == {4, 5}  # stage 1: hard only
    assert sampler.stats()["stage"] == 1.0


def test_curriculum_prioritized_weights_within_stage() -> None:
    stages = [CurriculumStage(iterations=1, levels=[1]), CurriculumStage(iterations=0, levels=[2])]
    sampler = make("curriculum_prioritized", [1, 2, 2], curriculum=stages, priority_floor=0.0)
    sampler.update([1], [1.0])  # weight 0: drawn only when the stage has nothing else
    assert sampler.draw(1, iteration=0) == [0]
    assert all(sampler.draw(1, iteration=5) == [2] for _ in range(20))


def test_uniform_and_prioritized_ignore_the_curriculum() -> None:
    stages = [CurriculumStage(iterations=0, levels=[2])]
    assert sorted(make("prioritized", [1, 2], curriculum=stages).draw(2, iteration=9)) == [0, 1]


def test_curriculum_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"data.curriculum\[1\].levels: no problems of level\(s\) \[4\]"):
        make("curriculum", [1, 2], curriculum=[CurriculumStage(1, []), CurriculumStage(0, [4])])
    with pytest.raises(ValueError, match=r"data.curriculum\[0\].iterations: must be >= 1"):
        make("curriculum", [1, 2], curriculum=[CurriculumStage(0, [1]), CurriculumStage(0, [2])])


def test_state_dict_round_trip_draws_the_same_next_indices() -> None:
    a = make("prioritized", list(range(1, 5)) * 10, seed=3)
    for t in range(3):
        picks = a.draw(8, iteration=t)
        a.update(picks, [float(i % 3 == 0) for i in picks])
    state = json.loads(json.dumps(a.state_dict()))  # plain Python types survive JSON
    b = make("prioritized", list(range(1, 5)) * 10, seed=99)
    b.load_state_dict(state)
    assert b.success_rate == a.success_rate
    assert [b.draw(8, iteration=t) for t in (3, 4)] == [a.draw(8, iteration=t) for t in (3, 4)]


def test_state_dict_for_other_problem_set_is_refused() -> None:
    state = make("uniform", [1, 1, 1]).state_dict()
    with pytest.raises(ValueError, match="state is for 3 problems, this data has 2"):
        make("uniform", [1, 1]).load_state_dict(state)


def test_stats() -> None:
    sampler = make("prioritized", [1, 1, 2, 2], priority_prior=0.5)
    sampler.update([0, 2], [1.0, 0.0])
    stats = sampler.stats()
    assert stats["success_rate_mean"] == 0.5 and stats["seen_frac"] == 0.5
    assert stats["success_rate_level_1"] == 0.75 and stats["success_rate_level_2"] == 0.25


def test_merge_is_a_no_op_without_distributed() -> None:
    assert not dist.is_initialized()
    sampler = make("prioritized", [1, 1, 1])
    sampler.update([0, 1], [1.0, 0.0])
    merge_success_across_ranks(sampler)
    assert sampler.success_rate == {0: 1.0, 1: 0.0}


def _merge_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        sampler = PrioritizedSampler([1, 1, 1, 1], DataConfig(success_rate_momentum=0.5), seed=rank)
        sampler.success_rate = {0: 0.5}  # in sync before this iteration
        if rank == 0:
            sampler.update([0, 1], [1.0, 1.0])
        else:
            sampler.update([0, 0, 2], [0.0, 0.0, 0.25])
        merge_success_across_ranks(sampler)
        Path(out_dir, f"{rank}.json").write_text(json.dumps(sampler.success_rate))
    finally:
        dist.destroy_process_group()


def test_merge_across_two_gloo_ranks(tmp_path: Path) -> None:
    mp.spawn(_merge_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rates = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    # problem 0: batch success (1 + 0 + 0) / 3 -> 0.5 * 0.5 + 0.5 / 3; 1 and 2: first observations
    expected = {"0": 0.25 + 0.5 / 3, "1": 1.0, "2": 0.25}
    for r in rates:
        assert r.keys() == expected.keys()
        assert all(abs(r[k] - v) < 1e-12 for k, v in expected.items())


def test_level_prior_lets_priorities_act_on_a_pool_of_unseen_problems() -> None:
    """``priority_prior: null``: an unseen problem stands at its level's mean observed success rate (0.5 before
    any), so one solved level-1 problem and one failed level-2 problem already steer the draws."""
    import doctest

    import kimi_rl.rl.sampling as sampling

    result = doctest.testmod(sampling)
    assert result.failed == 0 and result.attempted >= 2  # level_priors' two hand-computed examples
    difficulties = [1] * 50 + [2] * 50
    fixed = make("prioritized", difficulties, priority_floor=0.05)
    learned = make("prioritized", difficulties, priority_floor=0.05, priority_prior=None)
    assert learned.weight(1) == learned.weight(51) == 0.5  # nothing seen: the default for every level
    for s in (fixed, learned):
        s.update([0, 50], [1.0, 0.0])
    assert (fixed.weight(1), fixed.weight(51)) == (0.5, 0.5)  # a fixed prior: unseen problems stay alike
    assert (learned.weight(1), learned.weight(51)) == (0.05, 1.0)  # max(1 - 1, floor), max(1 - 0, floor)
    drawn = learned.draw(20, iteration=1)
    assert sum(difficulties[i] == 2 for i in drawn) >= 15  # P(level 2) = 49 / (49 + 49 * 0.05) = 0.95 per pick
    assert learned.stats()["success_rate_level_1"] == 1.0 and learned.stats()["success_rate_level_2"] == 0.0
