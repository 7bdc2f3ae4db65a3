"""DPO stage (src/long2short/dpo.py): pair batches, reference log-probs computed once, training through the real
Trainer on the tiny model, and DPO data sampled with the hf engine."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kimi_rl.config import Config, DataConfig, TrainerConfig
from kimi_rl.long2short.dpo import (DPODataModule, DPOExample, DPOModule, collate_pairs, pair_examples,
                         run_dpo, with_reference_logps)
from kimi_rl.long2short.methods import dpo_loss, dpo_rows, sequence_logps
from kimi_rl.models.modeling import load_model, load_tokenizer
from kimi_rl.rewards import VERIFIERS
from kimi_rl.tasks.base import Problem


def test_collate_pairs_puts_chosen_first():
    pairs = [DPOExample([1, 5], [7, 2], [8, 8, 8, 2], -1.0, -2.0), DPOExample([1], [9, 2], [9, 9, 2], -3.0, -4.0)]
    b = collate_pairs(pairs, pad_id=0)
    assert b["input_ids"].tolist() == [[1, 5, 7, 2, 0, 0], [1, 9, 2, 0, 0, 0],
                                       [1, 5, 8, 8, 8, 2], [1, 9, 9, 2, 0, 0]]
    assert b["loss_mask"].int().tolist() == [[0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0],
                                             [0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]]
    assert b["ref_chosen_logp"].tolist() == [-1.0, -3.0] and b["ref_rejected_logp"].tolist() == [-2.0, -4.0]


def test_pair_examples_tokenize_prompt_and_responses_with_eos(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    (ex,) = pair_examples([{"uid": "u", "question": "1+2=", "chosen": "3", "rejected": "33"}], tok, DataConfig())
    eos = tok.eos_token_id
    assert ex.prompt_ids == tok("1+2=")["input_ids"]
    assert ex.chosen_ids == tok("3", add_special_tokens=False)["input_ids"] + [eos]
    assert ex.rejected_ids == tok("33", add_special_tokens=False)["input_ids"] + [eos]


def crafted_rows(n: int) -> list[dict]:
    """Short chosen answers against long rambling rejected ones (the long2short preference)."""
    rows = []
    for i in range(n):
        a, b = i % 10, (3 * i) % 10
        rows.append({"uid": f"p{i}", "question": f"{a}+{b}=", "chosen": f"\\boxed{{{a + b}}}",
                     "rejected": f"{a}+{b}: check {a}, check {b}, recheck, so \\boxed{{{a + b}}}"})
    return rows


def test_reference_logps_are_the_starting_model_s(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir).train()
    examples = with_reference_logps(model, pair_examples(crafted_rows(3), tok, DataConfig()), tok.pad_token_id,
                                     pairs_per_batch=2)
    assert model.training  # mode restored
    one = collate_pairs(examples[2:], tok.pad_token_id)  # the third pair alone, other padding
    with torch.no_grad():
        logps = sequence_logps(model, one["input_ids"], one["attention_mask"], one["loss_mask"])
    assert examples[2].ref_chosen_logp == pytest.approx(float(logps[0]), abs=1e-4)
    assert examples[2].ref_rejected_logp == pytest.approx(float(logps[1]), abs=1e-4)
    assert examples[2].ref_rejected_logp < examples[2].ref_chosen_logp < 0  # longer response, lower log-prob


def scalars(folder) -> dict[str, list[float]]:
    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_dpo_through_trainer_lowers_loss_and_widens_margin(tiny_model_dir, tmp_path):
    cfg = Config()
    cfg.trainer = TrainerConfig(accelerator="cpu", threads=1)
    rows = crafted_rows(16)
    out = run_dpo(tiny_model_dir, rows, tmp_path / "model", cfg, tmp_path, beta=0.5, lr=2e-3, steps=8,
                  pairs_per_step=8)
    m = scalars(tmp_path / "tb" / "dpo")
    assert len(m["dpo/loss"]) == 8
    assert m["dpo/loss"][0] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 0
    assert m["dpo/margin"][0] == pytest.approx(0.0, abs=1e-4)
    assert m["dpo/loss"][-1] < m["dpo/loss"][0] - 0.2, m["dpo/loss"]
    assert m["dpo/margin"][-1] > 0.5, m["dpo/margin"]

    # the saved model, scored against the untouched starting model on all pairs
    tok = load_tokenizer(tiny_model_dir)
    ref = with_reference_logps(load_model(tiny_model_dir), pair_examples(rows, tok, DataConfig()), tok.pad_token_id)
    b = collate_pairs(ref, tok.pad_token_id)
    with torch.no_grad():
        logps = sequence_logps(load_model(out), b["input_ids"], b["attention_mask"], b["loss_mask"])
    res = dpo_loss(logps[:16], logps[16:], b["ref_chosen_logp"], b["ref_rejected_logp"], beta=0.5)
    assert float(res.loss) < math.log(2) - 0.2 and float(res.accuracy) == 1.0


def test_dpo_module_and_data_reject_bad_settings(tiny_model_dir):
    with pytest.raises(ValueError, match="beta must be > 0"):
        DPOModule(load_model(tiny_model_dir), beta=0.0)
    with pytest.raises(ValueError, match="no preference pairs"):
        DPODataModule([], pad_id=0, pairs_per_step=4, seed=0)


@pytest.fixture()
def parity_verifier():
    """Correct when the response has an even number of characters, never for problems answered 'never'."""

    def factory(**_):
        return lambda responses, problems: [float(p.answer != "never" and len(r) % 2 == 0)
                                            for r, p in zip(responses, problems)]

    VERIFIERS.register("parity_test", factory)
    yield "parity_test"
    VERIFIERS.unregister("parity_test")


def test_dpo_pairs_from_sampled_responses_count_problems_without_pairs(tiny_model_dir, parity_verifier):
    from kimi_rl.long2short.data import sample_scored

    cfg = Config()
    cfg.model = dataclasses.replace(cfg.model, path=str(tiny_model_dir))
    cfg.rollout = dataclasses.replace(cfg.rollout, engine="hf")
    problems = [Problem(uid=f"p{i}", question=f"{i}+1=", answer="never" if i < 2 else str(i + 1), difficulty=1)
                for i in range(6)]
    # a random model stops (eos) with chance ~1/100 per token: 150 tokens give lengths that differ
    samples = sample_scored(tiny_model_dir, problems, cfg, parity_verifier, 6, 1.0, 150)
    assert [len(s) for s in samples] == [6] * 6
    assert all(1 <= s.num_tokens <= 150 for ss in samples for s in ss)
    assert not any(s.correct for ss in samples[:2] for s in ss)
    data = dpo_rows(problems, samples)
    assert data.skipped_no_pairs >= 2  # p0 and p1 have no correct sample
    assert len(data.rows) > 0 and {r["uid"] for r in data.rows} <= {"p2", "p3", "p4", "p5"}
