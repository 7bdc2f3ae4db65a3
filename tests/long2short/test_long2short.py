"""Long2short pieces: weight merging, shortest rejection sampling, DPO pairs, loss and log-probs."""
from __future__ import annotations

import math

import pytest
import torch

from kimi_rl.config import ModelConfig
from kimi_rl.long2short.methods import (
    Pair, Sample, dpo_loss, dpo_pairs, dpo_rows, merge_models, merge_state_dicts, sequence_logps,
    shortest_correct, shortest_rejection_sampling,
)
from kimi_rl.models.modeling import build_tiny_model
from kimi_rl.tasks.base import Problem


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64,
                max_position_embeddings=64)
    return ModelConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("l2s")
    return {
        "long": build_tiny_model(tiny_cfg(), root / "long", seed=1),
        "short": build_tiny_model(tiny_cfg(), root / "short", seed=2),
        "wide": build_tiny_model(tiny_cfg(hidden_size=64), root / "wide", seed=3),
        "llama": build_tiny_model(tiny_cfg(arch="llama"), root / "llama", seed=4),
        "root": root,
    }


def load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder))


# ---------------------------------------------------------------- merging


def test_merge_state_dicts_exact_average():
    a = {"w": torch.tensor([1.0, 2.0, -4.0]), "b": torch.tensor([[8.0]])}
    b = {"w": torch.tensor([3.0, 6.0, 4.0]), "b": torch.tensor([[0.0]])}
    half = merge_state_dicts(a, b)  # 0.5 a + 0.5 b
    assert torch.equal(half["w"], torch.tensor([2.0, 4.0, 0.0]))
    assert torch.equal(half["b"], torch.tensor([[4.0]]))
    quarter = merge_state_dicts(a, b, weight=0.25)  # 0.25 a + 0.75 b: 0.25 + 2.25, 0.5 + 4.5, -1 + 3
    assert torch.equal(quarter["w"], torch.tensor([2.5, 5.0, 2.0]))
    assert torch.equal(quarter["b"], torch.tensor([[2.0]]))
    assert quarter["w"].dtype == torch.float32


def test_merge_state_dicts_keeps_bf16_and_rounds_once():
    a = {"w": torch.tensor([1.0, 3.0], dtype=torch.bfloat16)}
    b = {"w": torch.tensor([2.0, 4.0], dtype=torch.bfloat16)}
    out = merge_state_dicts(a, b)
    assert out["w"].dtype == torch.bfloat16
    assert torch.equal(out["w"], torch.tensor([1.5, 3.5], dtype=torch.bfloat16))


def test_merge_state_dicts_errors_name_first_tensor():
    a = {"a.w": torch.zeros(2), "z.w": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"'a.w' has shape \(2,\) in the first and \(4,\)"):
        merge_state_dicts(a, {"a.w": torch.zeros(4), "z.w": torch.zeros(5)})
    with pytest.raises(ValueError, match="'b.w' is in the second"):
        merge_state_dicts(a, {**a, "b.w": torch.zeros(1)})
    with pytest.raises(ValueError, match="'a.w' has dtype torch.float32 in the first and torch.float16"):
        merge_state_dicts(a, {"a.w": torch.zeros(2, dtype=torch.float16), "z.w": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        merge_state_dicts(a, a, weight=1.5)


def test_merge_models_averages_and_loads(tiny_folders):
    out = merge_models(tiny_folders["long"], tiny_folders["short"], tiny_folders["root"] / "merged",
                       weight=0.25)
    long_sd, short_sd = load(tiny_folders["long"]).state_dict(), load(tiny_folders["short"]).state_dict()
    merged = load(out).state_dict()  # loads with transformers
    for key in ("lm_head.weight", "model.layers.0.mlp.down_proj.weight"):
        assert not torch.equal(long_sd[key], short_sd[key])  # seeds differ, so the test can fail
        expected = (0.25 * long_sd[key].double() + 0.75 * short_sd[key].double()).float()
        assert torch.equal(merged[key], expected), key
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(out)).encode("1+2") == AutoTokenizer.from_pretrained(
        str(tiny_folders["long"])).encode("1+2")


def test_merge_models_shape_mismatch_names_first_tensor(tiny_folders):
    # sorted keys: lm_head.weight comes first; vocab 101 x hidden 32 vs 64
    expected = r"'lm_head.weight' has shape \(101, 32\) in the first and \(101, 64\)"
    with pytest.raises(ValueError, match=expected):
        merge_models(tiny_folders["long"], tiny_folders["wide"], tiny_folders["root"] / "bad")


def test_merge_models_config_mismatch(tiny_folders):
    with pytest.raises(ValueError, match="config.architectures is"):
        merge_models(tiny_folders["long"], tiny_folders["llama"], tiny_folders["root"] / "bad2")


# ---------------------------------------------------------------- shortest rejection sampling


def S(n: int, ok: bool, text: str = "") -> Sample:
    return Sample(response=text or f"r{n}{'+' if ok else '-'}", num_tokens=n, correct=ok)


def test_shortest_correct_ties_and_none():
    first, second = S(5, True, "first"), S(5, True, "second")
    assert shortest_correct([S(9, True), S(2, False), first, S(7, True), second]) is first
    assert shortest_correct([S(3, False), S(4, False)]) is None
    assert shortest_correct([]) is None


def test_shortest_rejection_sampling_skips_unsolved():
    problems = [Problem("p0", "1+1", "2"), Problem("p1", "2+2", "4"), Problem("p2", "3+3", "6")]
    samples = [[S(8, True, "long"), S(3, True, "short"), S(1, False)], [S(2, False)], [S(4, True, "only")]]
    res = shortest_rejection_sampling(problems, samples)
    assert res.rows == [{"uid": "p0", "question": "1+1", "response": "short"},
                        {"uid": "p2", "question": "3+3", "response": "only"}]
    assert res.skipped_no_correct == 1
    with pytest.raises(ValueError, match="3 problems but 2 sample lists"):
        shortest_rejection_sampling(problems, samples[:2])


# ---------------------------------------------------------------- DPO pairs


def test_dpo_pairs_rule_and_boundary():
    chosen = S(100, True, "chosen")
    samples = [
        S(149, True, "1.49x"),      # correct, below 1.5x: kept out
        chosen,
        S(150, True, "1.5x"),       # correct, exactly 1.5x: rejected
        S(100, True, "tie"),        # same length as chosen, correct: kept out
        S(99, False, "short-wrong"),  # wrong but shorter: kept out
        S(100, False, "eq-wrong"),  # wrong, same length: not longer, kept out
        S(101, False, "long-wrong"),  # wrong and longer: rejected
        S(300, True, "3x"),         # correct, 3x: rejected
    ]
    pairs = dpo_pairs(samples)
    assert all(p.chosen is chosen for p in pairs)
    assert [p.rejected.response for p in pairs] == ["1.5x", "long-wrong", "3x"]
    assert isinstance(pairs[0], Pair)


def test_dpo_pairs_exact_ratio_and_no_correct():
    # 1.1 * 50 is 55.00000000000001 in floats; the rule compares exactly, so 55 counts
    assert [p.rejected.num_tokens for p in dpo_pairs([S(50, True), S(55, True)], ratio=1.1)] == [55]
    assert dpo_pairs([S(5, False), S(9, False)]) == []
    with pytest.raises(ValueError, match="ratio must be > 1"):
        dpo_pairs([S(5, True)], ratio=1.0)


def test_dpo_rows():
    problems = [Problem("p0", "q0", "a"), Problem("p1", "q1", "b")]
    res = dpo_rows(problems, [[S(2, True, "c"), S(4, False, "w")], [S(2, True), S(2, True)]])
    assert res.rows == [{"uid": "p0", "question": "q0", "chosen": "c", "rejected": "w"}]
    assert res.skipped_no_pairs == 1


# ---------------------------------------------------------------- DPO loss and log-probs


def test_dpo_loss_hand_computed():
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    pc, pr, rc, rr = t(-10.0, -5.0), t(-20.0, -6.0), t(-12.0, -4.0), t(-15.0, -8.0)
    out = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # pair 0: chosen 0.1*(-10+12)=0.2, rejected 0.1*(-20+15)=-0.5, x=0.7:
    #   -log sigmoid(0.7) = log(1 + e^-0.7) = log(1.4965853) = 0.4031860
    # pair 1: chosen 0.1*(-5+4)=-0.1, rejected 0.1*(-6+8)=0.2, x=-0.3:
    #   -log sigmoid(-0.3) = log(1 + e^0.3) = log(2.3498588) = 0.8543552
    assert torch.allclose(out.rewards_chosen, t(0.2, -0.1))
    assert torch.allclose(out.rewards_rejected, t(-0.5, 0.2))
    assert math.isclose(out.loss.item(), (0.4031860 + 0.8543552) / 2, abs_tol=1e-6)
    assert out.accuracy.item() == 0.5
    with pytest.raises(ValueError, match="must all be"):
        dpo_loss(pc, pr[:1], rc, rr, beta=0.1)


def test_dpo_loss_gradient_prefers_chosen():
    pc = torch.tensor([-3.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    ref = torch.tensor([-3.0])
    dpo_loss(pc, pr, ref, ref, beta=0.5).loss.backward()
    # d/dpc -log sigmoid(beta*(pc-pr)) at 0 = -beta * sigmoid(0) = -0.25; d/dpr = +0.25
    assert math.isclose(pc.grad.item(), -0.25) and math.isclose(pr.grad.item(), 0.25)


def test_sequence_logps_matches_manual_gather(tiny_folders):
    torch.manual_seed(0)
    model = load(tiny_folders["long"]).eval()
    ids = torch.randint(4, 101, (2, 7))  # [B, T]
    attn = torch.ones_like(ids)  # [B, T]
    attn[1, 5:] = 0  # right padding on row 1
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)  # [B, T]
    loss_mask[0, 3:] = True
    loss_mask[1, 2:5] = True
    with torch.no_grad():
        got = sequence_logps(model, ids, attn, loss_mask)  # [B]
        logits = model(input_ids=ids, attention_mask=attn).logits  # [B, T, V]
    expected = torch.zeros(2)
    for b in range(2):
        for t in range(1, 7):
            if loss_mask[b, t]:
                expected[b] += torch.log_softmax(logits[b, t - 1], dim=-1)[ids[b, t]]
    assert got.shape == (2,)
    assert torch.allclose(got, expected, atol=1e-5)
    assert (got < 0).all()
