"""RolloutWorker (src/rollout/worker.py): one iteration's rollouts without Lightning, on the real hf engine and a
tiny model: draw, generate, score, pack; and the worker's lifecycle."""
from __future__ import annotations

import pytest

from kimi_rl.config import DataConfig, ModelConfig, RolloutConfig
from kimi_rl.rl.datamodule import PromptDataModule
from kimi_rl.models.modeling import load_tokenizer
from kimi_rl.rewards.scoring import decode
from kimi_rl.rl.schedule import RecipeSchedule
from kimi_rl.rollout.worker import RolloutWorker
from kimi_rl.tasks import TaskData
from kimi_rl.tasks.arithmetic import make_problems

P, K = 3, 2


def starts_with_digit(texts, problems):
    """The test's verifier: 1 for a response that starts with a digit."""
    return [float(t[:1].isdigit()) for t in texts]


@pytest.fixture()
def setup(tiny_model_dir):
    train, heldout = make_problems([1], 30, 2, seed=0)
    dm = PromptDataModule(TaskData(train, heldout, "arithmetic"), load_tokenizer(tiny_model_dir), DataConfig(levels=[1]), 0)
    dm.setup("fit")
    cfg = RolloutConfig(engine="hf", prompts_per_iteration=P, samples_per_prompt=K, max_response_tokens=6)
    worker = RolloutWorker(cfg, ModelConfig(), tiny_model_dir, starts_with_digit, seed=0, max_model_len=128)
    worker.open()
    yield worker, dm
    worker.close()


def test_collect_draws_scores_and_packs_one_iteration(setup):
    worker, dm = setup
    out = worker.collect(RecipeSchedule(max_response_tokens=6).settings_at(0), dm)
    assert len(out.problems) == P and len(out.groups) == P  # full rollouts: every group is released
    rows = [t for g in out.groups for t in g.trajectories]
    assert len(rows) == P * K and len(out.batch) == P * K
    for t in rows:
        assert 1 <= len(t.response_ids) <= 6 and t.versions == [0] * len(t.response_ids)
        right = starts_with_digit([decode(worker.tokenizer, t.response_ids)], [t.problem])[0] > 0.5
        assert t.correct == (right and t.finish_reason != "length") and t.reward == float(t.correct)
    assert out.metrics["rollout/new_prompts"] == P and out.metrics["rollout/released_groups"] == P
    assert out.metrics["reward/accuracy"] == pytest.approx(sum(t.correct for t in rows) / (P * K))
    assert out.batch.rewards.tolist() == [t.reward for t in rows]
    assert not worker.buffer.groups


def test_a_segment_keeps_unfinished_groups_for_the_next_iteration(setup):
    worker, dm = setup
    schedule = RecipeSchedule(max_response_tokens=6, segment_tokens=2)
    first = worker.collect(schedule.settings_at(0), dm)
    assert all(len(t.response_ids) <= 2 for g in first.groups for t in g.trajectories)
    waiting = len(worker.buffer.groups)
    assert waiting + len(first.groups) == P and waiting > 0  # a random model rarely stops within 2 tokens
    second = worker.collect(schedule.settings_at(1), dm)
    assert len(second.problems) == P - waiting  # capacity: buffered groups count against the iteration's P
    cont = [t for g in second.groups for t in g.trajectories if t.versions and t.versions[0] == 0]
    assert all(t.versions[:2] == [0, 0][: len(t.versions)] for t in cont)


def test_close_frees_the_engine_and_open_starts_another(setup):
    worker, _ = setup
    first = worker.engine
    worker.open()  # already open: same engine
    assert worker.engine is first
    worker.close()
    assert worker.engine is None
    worker.close()  # twice is harmless
    worker.open()
    assert worker.engine is not None and worker.engine is not first
