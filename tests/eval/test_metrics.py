"""Evaluation metrics (src/eval/metrics.py) on hand-computed values, alone and synced over two gloo ranks."""
from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kimi_rl.eval.metrics import (
    MajorityVote,
    MeanTokens,
    PassAtK,
    PerLevelAccuracy,
    TokenPercentile,
    majority_answer,
    pass_at_k,
)


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 0.4),  # c / n
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 0, 1, 0.0),
        (5, 0, 5, 0.0),
        (5, 4, 2, 1.0),  # n - c = 1 < k
        (5, 5, 1, 1.0),
        (4, 1, 4, 1.0),  # n - c = 3 < 4
        (10, 3, 3, 1 - 35 / 120),  # 1 - C(7,3)/C(10,3)
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_stable_for_large_n():
    # 1 - C(900, 100) / C(1000, 100): the binomials overflow floats, the product does not.
    exact = 1 - comb(900, 100) / comb(1000, 100)
    assert pass_at_k(1000, 100, 100) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def test_pass_at_k_metric():
    metric = PassAtK(k=2)
    metric.update([2, 0], n=5)  # 0.7, 0.0
    metric.update(torch.tensor([5]), n=[5])  # 1.0
    assert metric.compute().item() == pytest.approx((0.7 + 0.0 + 1.0) / 3)
    with pytest.raises(ValueError, match="2 correct counts but 1"):
        metric.update([1, 1], n=[4])


def test_majority_vote():
    assert majority_answer(["7", "5", None, "5", "7"]) == "5"  # tie 2-2: smallest string
    assert majority_answer(["5", "7", "7", "5"]) == majority_answer(["7", "5", "5", "7"])
    assert majority_answer([None, None]) is None
    metric = MajorityVote()
    metric.update(
        answers=[["4", "4", "5"], ["1", "2", "2"], [None, None, "3"], [None, None], ["9", "8"]],
        correct=[[True, True, False], [True, False, False], [False, False, True], [False, False], [False, True]],
    )
    # right: "4" (correct), wrong: "2", right: "3" (None does not vote), wrong: no answer, right: tie -> "8"
    assert metric.compute().item() == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="2 answers but 1 flags"):
        metric.update([["1", "2"]], [[True]])


def test_token_metrics():
    mean, p95 = MeanTokens(), TokenPercentile(q=0.95)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert p95.compute().item() == 0.0
    for lengths in ([10, 20], [30, 40, 50]):
        mean.update(lengths)
        p95.update(lengths)
    assert mean.compute().item() == pytest.approx(30.0)
    # linear: position 0.95 * (5 - 1) = 3.8 -> 40 + 0.8 * (50 - 40)
    assert p95.compute().item() == pytest.approx(48.0)
    with pytest.raises(ValueError, match="q must be"):
        TokenPercentile(q=95)


def test_per_level_accuracy():
    metric = PerLevelAccuracy()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute() == {}
    metric.update([1, 1, 2, 3], [1.0, 0.0, 1.0, 0.0])
    metric.update(torch.tensor([2, 1]), torch.tensor([0.0, 1.0]))
    out = metric.compute()
    assert list(out) == ["level_1", "level_2", "level_3"]
    assert [v.item() for v in out.values()] == pytest.approx([2 / 3, 0.5, 0.0])
    with pytest.raises(ValueError, match="2 levels but 1 scores"):
        metric.update([1, 2], [1.0])


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        pak, vote, mean, p95, level = PassAtK(k=1), MajorityVote(), MeanTokens(), TokenPercentile(), PerLevelAccuracy()
        if rank == 0:
            pak.update([1, 2], n=4)
            vote.update([["a", "a"]], [[True, True]])
            mean.update([10, 20])
            p95.update([10, 20])
            level.update([1, 2], [1.0, 0.0])
        else:
            pak.update([4], n=4)
            vote.update([["b", "c"], ["d"]], [[False, True], [False]])
            mean.update([30, 40, 50])
            p95.update([30, 40, 50])
            level.update([1, 1, 3], [0.0, 0.0, 1.0])
        result = {
            "pass1": pak.compute().item(), "vote": vote.compute().item(), "mean": mean.compute().item(),
            "p95": p95.compute().item(), "levels": {k: v.item() for k, v in level.compute().items()},
        }
        Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_metrics_sync_across_two_gloo_ranks(tmp_path: Path):
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = {
        "pass1": (0.25 + 0.5 + 1.0) / 3,
        "vote": 1 / 3,  # "a" right; tie "b"/"c" -> "b" (wrong); "d" wrong
        "mean": 30.0,
        "p95": 48.0,
        "levels": {"level_1": 1 / 3, "level_2": 0.0, "level_3": 1.0},
    }
    for rank in (0, 1):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got["levels"] == pytest.approx(expected["levels"])
        for key in ("pass1", "vote", "mean", "p95"):
            assert got[key] == pytest.approx(expected[key]), key


def test_quantile_is_linear_interpolation_like_token_percentile():
    from kimi_rl.eval.metrics import TokenPercentile, quantile

    # 0.95 * (5 - 1) = 3.8: between the 4th (40) and 5th (100) sorted values, 40 + 0.8 * 60 = 88
    assert quantile([100, 10, 20, 30, 40], 0.95) == pytest.approx(88.0)
    assert quantile([7], 0.5) == 7.0 and quantile([], 0.95) == 0.0
    metric = TokenPercentile(0.95)
    metric.update([100, 10, 20, 30, 40])
    assert float(metric.compute()) == pytest.approx(quantile([100, 10, 20, 30, 40], 0.95))
    with pytest.raises(ValueError, match="q must be in"):
        quantile([1], 1.5)
