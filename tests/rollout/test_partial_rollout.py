"""Partial rollouts (callbacks/partial_rollout.py) through the real Trainer, real vLLM and a real checkpoint.

One module-scoped pair of runs on a tiny model with a fixed next-token bias: a run that crashes after its
checkpoint at iteration 2, then a fresh Trainer resuming from ``last.ckpt`` for iterations 2 and 3.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import string
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from kimi_rl.bench.rollout import TokenBias, bias_next_token
from kimi_rl.callbacks import PartialRollout
from kimi_rl.config import Config
from kimi_rl.models.modeling import load_tokenizer
from kimi_rl.rewards import VERIFIERS
from kimi_rl.rollout.repetition import find_repeat
from kimi_rl.runs import RunPaths
from kimi_rl.tasks import TaskData
from kimi_rl.tasks.arithmetic import make_problems
from tb_scalars import event_scalars

K, MAX_TOKENS, SEGMENT = 4, 24, 8
REPEAT = {"repeat_ngram": 1, "repeat_count": 4, "repeat_window": 8}
REPEAT_PENALTY = -0.5
EOS_PROB, A_PROB = 0.02, 0.2
GOOD_FIRST = set(string.digits + string.ascii_lowercase)


def first_char_verdict(text: str) -> float:
    """The test's verifier: 1 when the response starts with a digit or a lowercase letter."""
    return float(text[:1] in GOOD_FIRST and text[:1] != "")


class SimulatedCrash(RuntimeError):
    pass


class Recorder(Callback):
    """Test-only: after each iteration, copies of the released groups (scored) and of the buffer;
    with ``crash_at``, raises when iteration ``crash_at`` starts (after the checkpoint of the one before)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.iterations: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.iteration == self.crash_at:
            self.worker = next(c for c in trainer.callbacks if isinstance(c, PartialRollout)).worker
            raise SimulatedCrash(f"killed at the start of iteration {self.crash_at}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        worker = next(c for c in trainer.callbacks if isinstance(c, PartialRollout)).worker
        self.iterations.append({
            "iteration": batch.index,
            "groups": copy.deepcopy(batch.rollouts.groups),
            "buffer": copy.deepcopy(worker.buffer.groups),
            "buffer_state": copy.deepcopy(worker.buffer.state_dict()),
        })


def config(model_dir: Path, root: Path, iterations: int, resume: str | None) -> Config:
    cfg = Config()
    cfg.run = dataclasses.replace(cfg.run, dir=str(root), name="partial", resume=resume)
    cfg.model = dataclasses.replace(cfg.model, path=str(model_dir))
    cfg.rollout = dataclasses.replace(cfg.rollout, prompts_per_iteration=8, samples_per_prompt=K,
                                      max_response_tokens=MAX_TOKENS, segment_tokens=SEGMENT,
                                      loss_on_old_segments=True, kv_cache_gib=0.25, **REPEAT)
    cfg.algo = dataclasses.replace(cfg.algo, lr=1e-3, minibatch_size=16, repeat_penalty=REPEAT_PENALTY)
    cfg.eval = dataclasses.replace(cfg.eval, samples=1, max_problems_per_level=1)
    cfg.rl = dataclasses.replace(cfg.rl, iterations=iterations, checkpoint_every=2, sample_log_every=0)
    return cfg


@pytest.fixture(scope="module")
def biased_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny fixture model with next-token probabilities eos 0.02 and ``a`` 0.2 at every position."""
    folder = tmp_path_factory.mktemp("biased") / "model"
    shutil.copytree(tiny_model_dir, folder)
    tok = load_tokenizer(folder)
    bias_next_token(folder, TokenBias({tok.eos_token_id: EOS_PROB, tok.convert_tokens_to_ids("a"): A_PROB}))
    return folder


def test_token_bias_logits_give_the_requested_probabilities():
    # V = 10, p(0) = 0.5: the other 9 share 0.5, so logit_0 = log(0.5 / (0.5 / 9)) = log 9
    assert TokenBias({0: 0.5}).logits(10) == pytest.approx([math.log(9)] + [0.0] * 9)
    with pytest.raises(ValueError, match="sum below 1"):
        TokenBias({0: 0.6, 1: 0.4}).logits(10)


def test_the_biased_model_samples_eos_and_a_with_the_set_probabilities(biased_model_dir):
    from kimi_rl.models.modeling import load_model

    tok = load_tokenizer(biased_model_dir)
    model = load_model(biased_model_dir, "float32").eval()
    ids = torch.randint(4, model.config.vocab_size, (4, 30), generator=torch.Generator().manual_seed(0))  # [4, 30]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits, dim=-1)  # [4, 30, V]
    eos, a = probs[..., tok.eos_token_id], probs[..., tok.convert_tokens_to_ids("a")]  # [4, 30]
    assert float((eos - EOS_PROB).abs().max()) < 0.1 * EOS_PROB
    assert float((a - A_PROB).abs().max()) < 0.1 * A_PROB


@pytest.fixture(scope="module")
def runs(biased_model_dir, tmp_path_factory):
    """A run of 4 iterations with a checkpoint every 2 that crashes when iteration 2 starts, then a fresh
    Trainer resuming from ``last.ckpt`` (``run.resume=auto``) that does iterations 2 and 3.

    The model is the tiny fixture model given a fixed next-token bias (``bias_next_token``): eos with
    probability 0.02 (most samples reach 24 tokens, so they need 3 segments of 8) and ``a`` with 0.2 (so a
    1-gram repeated 4 times in 8 tokens stops about a quarter of the samples, whatever the verifier says).
    """
    from kimi_rl import pipeline
    from kimi_rl.pipeline import run_rl

    root = tmp_path_factory.mktemp("partial")
    model_dir = biased_model_dir
    tok = load_tokenizer(model_dir)
    train, heldout = make_problems([1], 60, 2, seed=0)
    task = TaskData(train, heldout, "first_char_test")
    recorders = [Recorder(crash_at=2), Recorder()]
    build_trainer = pipeline.build_trainer
    out = {"tok": tok, "root": root}
    VERIFIERS.register("first_char_test", lambda **_: lambda texts, problems: [first_char_verdict(t) for t in texts])
    try:
        with pytest.MonkeyPatch.context() as mp:
            for i, resume in enumerate([None, "auto"]):
                mp.setattr(pipeline, "build_trainer",  # the recorder's hooks run before the others
                           lambda *a, _r=recorders[i], **kw: build_trainer(*a[:4], [_r, *a[4]], **kw))
                cfg = config(model_dir, root, 4, resume)
                if i == 0:
                    with pytest.raises(SimulatedCrash):
                        run_rl(cfg, RunPaths(cfg.run.dir, cfg.run.name), task, model_dir)
                    out["engine_after_crash"] = recorders[0].worker.engine
                    out["ckpt"] = torch.load(root / "partial" / "checkpoints" / "last.ckpt", weights_only=False)
                else:
                    run_rl(cfg, RunPaths(cfg.run.dir, cfg.run.name), task, model_dir)
    finally:
        VERIFIERS.unregister("first_char_test")
    out["first"], out["second"] = recorders[0].iterations, recorders[1].iterations
    out["scalars"] = event_scalars(root / "partial" / "tb" / "rl")
    return out


def released(runs) -> list:
    """Every released trajectory of both runs."""
    return [t for it in runs["first"] + runs["second"] for g in it["groups"] for t in g.trajectories]


def test_trajectories_span_iterations_and_groups_are_released_only_when_complete(runs):
    its = runs["first"] + runs["second"]
    assert [it["iteration"] for it in its] == [0, 1, 2, 3]
    for it in its:
        for g in it["groups"]:
            assert len(g.trajectories) == K and all(t.finished for t in g.trajectories), g.group_id
            drawn = int(g.group_id.split("@")[1])
            for t in g.trajectories:  # tokens come from the iterations between the draw and the release
                assert t.versions == sorted(t.versions) and drawn <= t.versions[0] <= t.versions[-1] <= it["iteration"]
        # the buffer keeps no complete group after the release, and only unfinished groups
        assert not any(g.finished for g in it["buffer"])
        assert all(len(g.trajectories) == K for g in it["buffer"])
    # iteration 0 could release only groups whose K samples all ended within one segment
    assert all(len(t.response_ids) <= SEGMENT for g in its[0]["groups"] for t in g.trajectories)
    segments = [t.segments for t in released(runs)]
    assert max(segments) == 3 and sum(s > 1 for s in segments) > len(segments) / 2, segments
    m = runs["scalars"]
    released_segments = m["rollout/release_segments_mean"]
    assert {2, 3} <= set(released_segments) and all(released_segments[k] > 1 for k in (2, 3)), released_segments
    assert m["rollout/buffer_unfinished"][0] > 0
    losses = m["train/loss"]
    assert {2, 3} <= set(losses) and all(math.isfinite(v) for v in losses.values()), losses
    assert all(v == 0 for v in m["train/nonfinite_loss"].values())


def test_responses_are_cut_at_max_response_tokens_and_scored_wrong(runs):
    trajectories = released(runs)
    assert all(len(t.response_ids) <= MAX_TOKENS for t in trajectories)
    cut = [t for t in trajectories if t.finish_reason == "length"]
    assert cut and all(len(t.response_ids) == MAX_TOKENS for t in cut)
    assert all(not t.correct and t.reward == 0.0 for t in cut)
    # some of them would have passed the verifier: the cut, not the verdict, made them wrong
    texts = [runs["tok"].decode(t.response_ids, skip_special_tokens=True) for t in cut]
    assert any(first_char_verdict(text) for text in texts)
    stopped = [t for t in trajectories if t.finish_reason == "stop"]
    assert stopped and all(t.response_ids[-1] == runs["tok"].eos_token_id for t in stopped)


def test_repeating_trajectories_are_stopped_and_penalised(runs):
    trajectories = released(runs)
    repeated = [t for t in trajectories if t.finish_reason == "repeat"]
    assert len(repeated) >= 3, [t.finish_reason for t in trajectories]
    for t in repeated:  # cut exactly where the detector first fires: the 4th copy of the last token in 8
        assert find_repeat(t.response_ids, 1, REPEAT["repeat_count"], REPEAT["repeat_window"]) == len(t.response_ids)
        verdict = first_char_verdict(runs["tok"].decode(t.response_ids, skip_special_tokens=True))
        assert t.correct == bool(verdict) and t.reward == pytest.approx(verdict + REPEAT_PENALTY)
    assert any(t.segments > 1 for t in repeated)  # caught in a later segment too
    for t in trajectories:
        if t.finish_reason != "repeat":
            assert find_repeat(t.response_ids, 1, REPEAT["repeat_count"], REPEAT["repeat_window"]) is None
    assert max(runs["scalars"]["rollout/release_finish_repeat"].values()) > 0


def nan_as_text(x):
    """``x`` with every NaN float as the text "nan" (the log-probs the engine was not asked for), so == compares a
    state read back from a file with the one in memory (NaN != NaN)."""
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, dict):
        return {k: nan_as_text(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_as_text(v) for v in x]
    return x


def test_a_resumed_trainer_continues_the_checkpointed_trajectories(runs):
    assert runs["engine_after_crash"] is None  # the crashed fit closed its engine (on_exception)
    saved = runs["ckpt"]["callbacks"]["PartialRollout"]["ranks"][0]["buffer"]
    assert runs["ckpt"]["kimi_rl"]["iteration"] == 2
    assert nan_as_text(saved) == nan_as_text(runs["first"][-1]["buffer_state"])  # the file holds the buffer as it was
    unfinished = {g["group_id"]: g for g in saved["groups"] if any(t["finish_reason"] is None for t in g["trajectories"])}
    assert unfinished
    later = {g.group_id: g for it in runs["second"] for g in it["groups"]}
    assert set(unfinished) <= set(later)  # all of them were continued to the end in the resumed run
    for group_id, g in unfinished.items():
        for old, new in zip(g["trajectories"], later[group_id].trajectories, strict=True):
            n = len(old["response_ids"])
            assert new.prompt_ids == old["prompt_ids"]
            assert new.response_ids[:n] == old["response_ids"]
            assert nan_as_text(new.logprobs[:n]) == nan_as_text(old["logprobs"])
            assert new.versions[:n] == old["versions"]
            if old["finish_reason"] is None:
                assert len(new.response_ids) > n and set(new.versions[n:]) <= {2, 3}
            else:
                assert new.response_ids == old["response_ids"] and new.finish_reason == old["finish_reason"]
    # the first resumed iteration drew new prompts only for the free capacity
    first_new = {g.group_id for g in runs["second"][0]["buffer"]} - set(unfinished)
    pending = sum(t["finish_reason"] is None for g in saved["groups"] for t in g["trajectories"])
    assert runs["scalars"]["rollout/new_prompts"][2] == (8 * K - pending) // K
    assert all(gid.endswith("@2") for gid in first_new)
