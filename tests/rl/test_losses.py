"""Policy losses (src/rl/losses.py) on hand-computed numbers, and Eq. 3's gradient on a toy policy."""
from __future__ import annotations

import math

import pytest
import torch

from kimi_rl.config import AlgoConfig
from kimi_rl.rl.losses import (LOSSES, GRPOLoss, LossOutput, ReSTLoss, group_logmeanexp, informative_rows,
                            sequence_logp)

# Two samples, three positions; the last position of sample 0 is padding (mask 0).
TOKEN_LOGP = [[-1.0, -2.0, -3.0], [-0.5, -0.5, -1.0]]
TOKEN_LOGP_OLD = [[-1.0, -1.0, -9.0], [-0.5, -0.5, -2.0]]
MASK = [[1, 1, 0], [1, 1, 1]]


def tensors(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logp = torch.tensor(TOKEN_LOGP, dtype=torch.float64, requires_grad=requires_grad)
    return logp, torch.tensor(TOKEN_LOGP_OLD, dtype=torch.float64), torch.tensor(MASK, dtype=torch.bool)


def close(value: torch.Tensor | float, expected: float, tol: float = 1e-9) -> bool:
    value = value.detach() if isinstance(value, torch.Tensor) else value
    return abs(float(value) - expected) < tol


def test_registry_names_and_unknown_name() -> None:
    assert LOSSES.names() == ["grpo", "mirror_descent", "rest", "rloo"]
    with pytest.raises(KeyError, match="valid names: grpo, mirror_descent, rest, rloo"):
        LOSSES.get("ppo")


def test_sequence_logp_sum_and_mean() -> None:
    logp, _, mask = tensors()
    assert sequence_logp(logp, mask, normalize=False).tolist() == [-3.0, -2.0]
    expected = torch.tensor([-1.5, -2.0 / 3], dtype=torch.float64)
    assert torch.allclose(sequence_logp(logp, mask, normalize=True), expected)
    empty = torch.zeros(1, 3, dtype=torch.bool)
    assert sequence_logp(logp[:1], empty, normalize=True).tolist() == [0.0]


def test_mirror_descent_advantages_mean_baseline_any_group_ids() -> None:
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([5, 2, 5, 2])  # group 5: {1, 0} mean 0.5; group 2: {1, 1} mean 1
    adv = LOSSES.get("mirror_descent").advantages(rewards, groups, AlgoConfig(advantage_scale="none"))
    assert adv.tolist() == [0.5, 0.0, -0.5, 0.0]


def test_mirror_descent_advantages_logmeanexp_baseline() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1])
    adv = LOSSES.get("mirror_descent").advantages(rewards, groups, AlgoConfig(tau=0.5, baseline="logmeanexp",
                                                                             advantage_scale="none"))
    b0 = 0.5 * math.log((math.exp(2.0) + math.exp(0.0)) / 2)  # 0.7168...
    assert close(adv[0], 1 - b0) and close(adv[1], -b0)
    assert close(adv[2], 0.0) and close(adv[3], 0.0)  # all-equal group: baseline = r


def test_mirror_descent_advantages_scaled_by_group_std() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 0, 0, 1])  # group 0: {1, 0, 0, 0} mean 0.25, std sqrt(0.75 / 3) = 0.5
    cfg = AlgoConfig(advantage_scale="group_std")
    adv = LOSSES.get("mirror_descent").advantages(rewards, groups, cfg)
    scale = 0.5 + 1e-6
    assert close(adv[0], 0.75 / scale) and close(adv[1], -0.25 / scale) and close(adv[3], -0.25 / scale)
    assert adv[2] == 0.0 and adv[5] == 0.0  # all-equal group {1, 1}: 0, not NaN
    # the same numbers as GRPO's advantages; with the logmeanexp baseline only the shift changes
    assert torch.allclose(adv, LOSSES.get("grpo").advantages(rewards, groups, cfg))
    lme = LOSSES.get("mirror_descent").advantages(rewards, groups, AlgoConfig(advantage_scale="group_std",
                                                                             baseline="logmeanexp", tau=0.5))
    b0 = 0.5 * math.log((math.exp(2.0) + 3.0) / 4)
    assert close(lme[0], (1 - b0) / scale) and close(lme[1], -b0 / scale)


def test_logmeanexp_is_stable_for_small_tau() -> None:
    rewards = torch.tensor([1.0, 0.0], dtype=torch.float64)
    base = group_logmeanexp(rewards, torch.tensor([0, 0]), tau=1e-3)  # exp(1000) would overflow
    assert close(base[0], 1.0 - 1e-3 * math.log(2.0), 1e-12) and bool(torch.isfinite(base).all())


def test_mirror_descent_loss_sum() -> None:
    logp, old, mask = tensors()
    adv = torch.tensor([0.5, -0.5], dtype=torch.float64)
    out = LOSSES.get("mirror_descent")(logp, old, mask, adv, AlgoConfig(tau=0.1, length_normalize=False))
    # logp = [-3, -2], logp_old = [-2, -3]; policy = [1.5, -1.0]; kl = 0.05 * [1, 1]
    assert isinstance(out, LossOutput)
    assert close(out.terms["policy"], 0.25) and close(out.terms["kl"], 0.05) and close(out.loss, 0.30)


def test_mirror_descent_loss_length_normalized() -> None:
    logp, old, mask = tensors()
    cfg = AlgoConfig(tau=0.1, length_normalize=True)
    out = LOSSES.get("mirror_descent")(logp, old, mask, torch.tensor([0.5, -0.5], dtype=torch.float64), cfg)
    # logp = [-1.5, -2/3], logp_old = [-1, -1]; policy = [0.75, -1/3]; kl = 0.05 * [0.25, 1/9]
    assert close(out.terms["policy"], (0.75 - 1 / 3) / 2)
    assert close(out.terms["kl"], 0.05 * (0.25 + 1 / 9) / 2)


def test_length_normalized_mirror_descent_is_the_sum_loss_at_tau_over_L_weighted_by_1_over_L() -> None:
    """The default (mean log-prob, tau 50) per sample: (1 / L)[-A S + (tau / (2L)) (S - S_old)^2] with S the sum."""
    logp, old, mask = tensors(requires_grad=True)
    adv = torch.tensor([0.5, -0.5], dtype=torch.float64)
    cfg = AlgoConfig()
    assert cfg.length_normalize and cfg.tau == 50.0
    out = LOSSES.get("mirror_descent")(logp, old, mask, adv, cfg)
    # S = [-3, -2], S_old = [-2, -3], L = [2, 3]: sample 0: (1/2)[1.5 + (50/4) * 1] = 7; sample 1: (1/3)[-1 + (50/6) * 1]
    per_sample = [0.5 * (1.5 + 12.5), (-1.0 + 50 / 6) / 3]
    assert close(out.loss, sum(per_sample) / 2)
    out.loss.backward()
    # row by row, the gradient equals the summed-logp loss's at tau / L, scaled by 1 / L
    for row, length in ((0, 2), (1, 3)):
        lp, _, _ = tensors(requires_grad=True)
        summed = LOSSES.get("mirror_descent")(lp[row:row + 1], old[row:row + 1], mask[row:row + 1], adv[row:row + 1],
                                              AlgoConfig(tau=50.0 / length, length_normalize=False))
        (summed.loss / length).backward()
        assert torch.allclose(logp.grad[row] * 2, lp.grad[row], atol=1e-12)  # out.loss is the mean over 2 rows


def test_mirror_descent_gradient_is_paper_eq3_on_toy_policy() -> None:
    """Toy policy: 2 positions x 3 tokens of free logits; 4 sampled sequences of one prompt."""
    torch.manual_seed(0)
    theta = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)  # [T, V]
    theta_old = theta.detach() + 0.3 * torch.randn(2, 3, dtype=torch.float64)
    y = torch.tensor([[0, 1], [2, 2], [1, 0], [0, 0]])  # [k, T] sampled tokens
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    tau = 0.5
    cfg = AlgoConfig(tau=tau, advantage_scale="none", length_normalize=False)  # the paper's r_j - mean r, sum logp

    def token_logp(logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits, dim=-1).gather(1, y.T).T  # [k, T]

    loss_fn = LOSSES.get("mirror_descent")
    adv = loss_fn.advantages(rewards, torch.zeros(4, dtype=torch.long), cfg)
    out = loss_fn(token_logp(theta), token_logp(theta_old), torch.ones(4, 2), adv, cfg)
    out.loss.backward()

    # Eq. 3 by hand: grad of the objective = 1/k sum_j [(r_j - mean r) - tau (logp_j - logp_old_j)] grad logp_j,
    # with grad_theta[t] logp_j = onehot(y_jt) - softmax(theta[t]); the loss is its negative.
    probs = torch.softmax(theta.detach(), dim=-1)  # [T, V]
    logp = token_logp(theta.detach()).sum(1)  # [k]
    logp_old = token_logp(theta_old).sum(1)  # [k]
    coef = (rewards - rewards.mean()) - tau * (logp - logp_old)  # [k]
    grad_objective = torch.zeros(2, 3, dtype=torch.float64)
    for j in range(4):
        for t in range(2):
            grad_objective[t] += coef[j] * (torch.nn.functional.one_hot(y[j, t], 3) - probs[t]) / 4
    assert torch.allclose(theta.grad, -grad_objective, atol=1e-12)


def test_informative_rows_drop_groups_with_all_zero_advantages() -> None:
    # groups 7: all right, 3: mixed, 9: all wrong, 5: mixed (rows not contiguous)
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    group = torch.tensor([7, 7, 3, 3, 9, 9, 5, 5])
    cfg = AlgoConfig(advantage_scale="none")
    adv = LOSSES.get("mirror_descent").advantages(rewards, group, cfg)  # [0, 0, .5, -.5, 0, 0, -.5, .5]
    assert informative_rows(adv, group).tolist() == [2, 3, 6, 7]
    # ReST's advantage is the 0/1 "keep" weight: an all-right group stays, an all-wrong one goes
    rest = LOSSES.get("rest").advantages(rewards, group, cfg)
    assert informative_rows(rest, group).tolist() == [0, 1, 2, 3, 6, 7]
    assert informative_rows(torch.zeros(4), torch.tensor([0, 0, 1, 1])).numel() == 0


def test_grpo_advantages() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    adv = LOSSES.get("grpo").advantages(rewards, groups, AlgoConfig())
    std = math.sqrt(1 / 3)  # sample std of {1, 0, 0, 1}
    expected = [0.5 / (std + 1e-6), -0.5 / (std + 1e-6), -0.5 / (std + 1e-6), 0.5 / (std + 1e-6), 0, 0, 0]
    assert torch.allclose(adv, torch.tensor(expected, dtype=torch.float64))


def test_grpo_clipped_loss_terms_and_gradient() -> None:
    ratio = torch.tensor([[1.5, 0.9, 3.0], [0.5, 1.1, 0.1]], dtype=torch.float64)  # last column masked
    old = torch.zeros(2, 3, dtype=torch.float64)
    logp = ratio.log().requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    out = GRPOLoss()(logp, old, mask, torch.tensor([1.0, -1.0], dtype=torch.float64), AlgoConfig(clip_eps=0.2))
    # sample 0 (A=1): min(1.5, 1.2)=1.2, min(0.9, 0.9)=0.9 -> -1.05; sample 1 (A=-1): -0.8, -1.1 -> 0.95
    assert close(out.loss, -0.05)
    assert close(out.terms["clip_frac"], 0.5)  # token 0 of both samples is clipped
    assert close(out.terms["ratio_mean"], (1.5 + 0.9 + 0.5 + 1.1) / 4)
    out.loss.backward()
    # d/dlogp of -(1/2)(1/2) rho A on unclipped tokens; 0 where clipped or masked
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.225, 0.0], [0.0, 0.275, 0.0]], dtype=torch.float64))


def test_rloo_advantages_and_loss() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    adv = LOSSES.get("rloo").advantages(rewards, torch.tensor([0, 0, 0, 1]), AlgoConfig())
    assert adv.tolist() == [1.0, -0.5, -0.5, 0.0]  # r - mean of the others; 0 for a group of one
    logp, old, mask = tensors(requires_grad=True)
    out = LOSSES.get("rloo")(logp, old, mask, torch.tensor([1.0, -0.5], dtype=torch.float64), AlgoConfig())
    # rho: sample 0 [1, e^-1, -] (padding), sample 1 [1, 1, e]; loss = mean(-1 (1 + e^-1), 0.5 (2 + e))
    e = math.e
    assert close(out.loss, (-(1 + 1 / e) + 0.5 * (2 + e)) / 2) and close(out.terms["logp"], -2.5)
    assert close(out.terms["ratio_mean"], (1 + 1 / e + 2 + e) / 5)
    out.loss.backward()
    # d/dlogp_t = -A rho_t / B on masked tokens: the later-pass gradient reweighted by pi / pi_old
    expected = torch.tensor([[-0.5, -0.5 / e, 0.0], [0.25, 0.25, 0.25 * e]], dtype=torch.float64)
    assert torch.allclose(logp.grad, expected)


def test_rloo_first_pass_gradient_is_plain_reinforce() -> None:
    """On the policy that sampled (logp_old = logp, the first pass) the importance weight is 1: the gradient
    is -A_j grad logp_j, REINFORCE with the leave-one-out baseline."""
    logp, _, mask = tensors(requires_grad=True)
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    LOSSES.get("rloo")(logp, logp.detach(), mask, adv, AlgoConfig()).loss.backward()
    plain = logp.detach().clone().requires_grad_(True)
    (-(adv * sequence_logp(plain, mask, normalize=False))).mean().backward()
    assert torch.allclose(logp.grad, plain.grad) and logp.grad[0, 0] == -0.5


def test_rest_keeps_only_correct_samples() -> None:
    rewards = torch.tensor([1.0, 0.0, -0.2, 0.9])
    groups = torch.tensor([0, 0, 1, 1])
    assert LOSSES.get("rest").advantages(rewards, groups, AlgoConfig()).tolist() == [1, 0, 0, 1]
    assert ReSTLoss(threshold=0.95).advantages(rewards, groups, AlgoConfig()).tolist() == [1, 0, 0, 0]
    logp = torch.tensor([[-3.0], [-2.0], [-1.0], [-4.0]], requires_grad=True)
    adv = torch.tensor([1.0, 0.0, 0.0, 1.0])
    out = LOSSES.get("rest")(logp, logp.detach(), torch.ones(4, 1), adv, AlgoConfig())
    assert close(out.loss, 3.5, 1e-6) and close(out.terms["kept_frac"], 0.5)  # mean NLL of the 2 kept
    out.loss.backward()
    assert logp.grad.flatten().tolist() == [-0.5, 0.0, 0.0, -0.5]


def test_rest_minibatch_without_correct_sample_is_zero() -> None:
    logp = torch.tensor([[-3.0], [-2.0]], requires_grad=True)
    out = LOSSES.get("rest")(logp, logp.detach(), torch.ones(2, 1), torch.zeros(2), AlgoConfig())
    out.loss.backward()
    assert out.loss.item() == 0.0 and logp.grad.abs().sum() == 0


@pytest.mark.parametrize("name", ["mirror_descent", "grpo", "rloo", "rest"])
def test_every_loss_has_the_uniform_interface(name: str) -> None:
    torch.manual_seed(1)
    loss_fn = LOSSES.get(name)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    adv = loss_fn.advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 1]), AlgoConfig())
    assert adv.shape == (6,)
    logp = (-torch.rand(6, 5)).requires_grad_(True)
    mask = torch.rand(6, 5) > 0.3
    out = loss_fn(logp, logp.detach() - 0.1, mask, adv, AlgoConfig())
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.terms and all(t.dim() == 0 and not t.requires_grad for t in out.terms.values())
    out.loss.backward()
    assert logp.grad[~mask].abs().sum() == 0  # padding never gets a gradient
    float_out = loss_fn(logp, logp.detach() - 0.1, mask.float(), adv, AlgoConfig())
    assert torch.allclose(out.loss, float_out.loss)


def test_shape_errors_name_the_tensors() -> None:
    logp, old, mask = tensors()
    with pytest.raises(ValueError, match="adv"):
        LOSSES.get("mirror_descent")(logp, old, mask, torch.zeros(3), AlgoConfig())
    with pytest.raises(ValueError, match="mask"):
        LOSSES.get("grpo")(logp, old, mask[:, :2], torch.zeros(2), AlgoConfig())
    with pytest.raises(ValueError, match="group_index"):
        LOSSES.get("rloo").advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long), AlgoConfig())
