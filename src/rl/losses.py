"""Policy losses by name (``algo.loss``): k1.5 mirror descent and the GRPO / RLOO / ReST baselines.

Mirror descent departs from the paper's Eq. 3 by default in two places: its advantages are divided by the
group's reward std (``algo.advantage_scale: group_std``; ``none`` is the paper's), and a sample's logp is the
mean, not the sum, of its token log-probs (``algo.length_normalize: true``, with tau 50 where the sum had 0.5;
``false`` is the paper's). It also offers the exact ``tau log mean exp(r / tau)`` baseline beside the group
mean (paper section 2.3.2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from kimi_rl.config import AlgoConfig
from kimi_rl.registries import LOSSES  # noqa: F401  (kimi_rl.rl.losses.LOSSES, as before)


@dataclass
class LossOutput:
    """What every policy loss returns."""

    loss: Tensor
    """Scalar to backpropagate: the mean over the minibatch's samples."""
    terms: dict[str, Tensor] = field(default_factory=dict)
    """Detached scalars for logging (names depend on the loss)."""


class PolicyLoss(Protocol):
    """The one interface of ``LOSSES`` entries.

    ``advantages`` runs once over a whole iteration's samples (whole groups) before
    minibatching; ``__call__`` runs per minibatch on token log-probs.
    """

    def advantages(self, rewards: Tensor, group_index: Tensor, cfg: AlgoConfig) -> Tensor: ...

    def __call__(self, token_logp: Tensor, token_logp_old: Tensor, mask: Tensor, adv: Tensor,
                 cfg: AlgoConfig) -> LossOutput: ...


GROUP_STD_EPS = 1e-6
"""Added to a group's reward std before dividing by it (GRPO, ``advantage_scale: group_std``): an all-equal
group gives 0, not NaN."""


class GroupStats(NamedTuple):
    """Statistics of each sample's own group, broadcast back to the samples (float64)."""

    mean: Tensor  # [N]
    std: Tensor  # [N] sample std (k - 1 in the denominator); 0 when k == 1
    count: Tensor  # [N] k, the group's size

    def over_std(self, adv: Tensor, eps: float = GROUP_STD_EPS) -> Tensor:
        """``adv / (std + eps)``: advantages in units of their group's reward spread (GRPO); [N] -> [N] float64."""
        return adv.double() / (self.std + eps)


def _dense_groups(rewards: Tensor, group_index: Tensor) -> tuple[Tensor, int]:
    if rewards.dim() != 1 or rewards.shape != group_index.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and group_index {tuple(group_index.shape)} "
                         "must both be 1-D of the same length")
    _, inverse = torch.unique(group_index, return_inverse=True)  # [N] group number 0..G-1
    return inverse, int(inverse.max()) + 1 if inverse.numel() else 0


def _group_sum(values: Tensor, inverse: Tensor, groups: int) -> Tensor:
    return torch.zeros(groups, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)  # [G]


def group_stats(rewards: Tensor, group_index: Tensor) -> GroupStats:
    """Mean, sample std and size of each sample's group; ``group_index`` may hold any ids. [N] -> [N]."""
    inverse, groups = _dense_groups(rewards, group_index)
    r = rewards.to(torch.float64)  # [N]
    count = _group_sum(torch.ones_like(r), inverse, groups)  # [G]
    mean = _group_sum(r, inverse, groups) / count  # [G]
    sq = _group_sum((r - mean[inverse]) ** 2, inverse, groups)  # [G]
    std = (sq / (count - 1).clamp(min=1)).sqrt()  # [G]
    return GroupStats(mean[inverse], std[inverse], count[inverse])


def informative_rows(adv: Tensor, group_index: Tensor, eps: float = 1e-8) -> Tensor:
    """Rows of the groups with at least one advantage ``|A_j| > eps``; [N], [N] -> [M] long, ascending.

    A group whose samples all got the same reward has ``r_j - b = 0`` for every j under the mean
    (or logmeanexp) baseline, so its policy-gradient term ``-(r_j - b) log pi(y_j|x)`` is zero: it only
    dilutes the minibatch mean and costs a forward/backward pass. DAPO (arXiv 2503.14476) filters
    such groups the same way; k1.5 does not say. (In mirror descent the ``tau/2 (log pi - log pi_old)^2``
    term of a skipped sample is dropped with it.)

    >>> informative_rows(torch.tensor([0.0, 0.0, 0.5, -0.5]), torch.tensor([0, 0, 1, 1])).tolist()
    [2, 3]
    """
    inverse, groups = _dense_groups(adv, group_index)
    hit = _group_sum((adv.abs() > eps).to(torch.float64), inverse, groups) > 0  # [G]
    return hit[inverse].nonzero().flatten()  # [M]


def group_logmeanexp(rewards: Tensor, group_index: Tensor, tau: float) -> Tensor:
    """``tau * log(mean_j exp(r_j / tau))`` over each sample's group, via a stable logsumexp. [N] -> [N].

    The exact estimate of ``tau log Z`` of the paper's closed-form optimum (section 2.3.2).
    """
    inverse, groups = _dense_groups(rewards, group_index)
    z = rewards.to(torch.float64) / tau  # [N]
    peak = torch.full((groups,), -math.inf, dtype=z.dtype, device=z.device)  # [G]
    peak = peak.scatter_reduce(0, inverse, z, "amax")  # [G] max_j r_j / tau per group
    lse = peak + _group_sum((z - peak[inverse]).exp(), inverse, groups).log()  # [G] log sum_j exp(r_j / tau)
    count = _group_sum(torch.ones_like(z), inverse, groups)  # [G]
    return (tau * (lse - count.log()))[inverse].to(rewards.dtype)  # [N]


def sequence_logp(token_logp: Tensor, mask: Tensor, normalize: bool) -> Tensor:
    """A sample's log-probability: ``sum_t m_t * logp_t``, or that over ``sum_t m_t`` when ``normalize``.

    token_logp, mask: [B, T] (mask bool or float, 1 on response tokens in the loss). Returns [B].
    A sample without masked tokens gets 0.
    """
    m = mask.to(token_logp.dtype)  # [B, T]
    total = (token_logp * m).sum(dim=-1)  # [B]
    return total / m.sum(dim=-1).clamp(min=1.0) if normalize else total


def _check_shapes(token_logp: Tensor, token_logp_old: Tensor, mask: Tensor, adv: Tensor) -> None:
    if token_logp.dim() != 2 or token_logp_old.shape != token_logp.shape or mask.shape != token_logp.shape:
        raise ValueError(f"token_logp {tuple(token_logp.shape)}, token_logp_old {tuple(token_logp_old.shape)} "
                         f"and mask {tuple(mask.shape)} must all be [B, T]")
    if adv.shape != token_logp.shape[:1]:
        raise ValueError(f"adv {tuple(adv.shape)} must be [B] with B = {token_logp.shape[0]}")


class MirrorDescentLoss:
    """k1.5 online policy mirror descent (paper Eq. 3, DESIGN.md section 1).

    Per sample j of prompt x, with logp the sequence log-prob under the current policy and
    logp_old the same under the previous iteration's policy (recorded at rollout):

        loss_j = -(r_j - b) * logp_j + (tau / 2) * (logp_j - logp_old_j)^2

    b = mean_j r_j (``baseline: mean``) or tau * log mean_j exp(r_j / tau) (``logmeanexp``).
    With ``length_normalize`` (the default; not in the paper) logp_j is the mean over the response's L_j tokens,
    logp_j = S_j / L_j with S_j the sum, so

        loss_j = (1 / L_j) * [-(r_j - b) * S_j + (tau / (2 L_j)) * (S_j - S_old_j)^2]

    the paper's loss on the sum with tau / L_j for tau, each sample weighted by 1 / L_j (GRPO's per-sequence
    normalisation); tau 50 gives tau / L ~ 0.5 for ~100-token answers.
    With ``advantage_scale: group_std`` (the default; not in the paper) r_j - b is divided by std(r) + 1e-6,
    the sample std of the group's rewards, as in GRPO: the paper's loss with each prompt's rewards in units of
    their own spread (a group with one success in 8 gives it 0.875 / 0.354 = 2.47, not 0.875).
    The loss is the mean over the minibatch's samples. Terms: ``policy`` = mean(-adv * logp),
    ``kl`` = mean((tau / 2)(logp - logp_old)^2).
    """

    def advantages(self, rewards: Tensor, group_index: Tensor, cfg: AlgoConfig) -> Tensor:
        """``r_j - b`` with the configured baseline b of the sample's group, over the group's reward std
        when ``advantage_scale`` is group_std; [N] -> [N]."""
        stats = group_stats(rewards, group_index)
        if cfg.baseline == "logmeanexp":
            adv = rewards.double() - group_logmeanexp(rewards, group_index, cfg.tau).double()  # [N]
        else:
            adv = rewards.double() - stats.mean  # [N]
        if cfg.advantage_scale == "group_std":
            adv = stats.over_std(adv)
        return adv.to(rewards.dtype)

    def __call__(self, token_logp: Tensor, token_logp_old: Tensor, mask: Tensor, adv: Tensor,
                 cfg: AlgoConfig) -> LossOutput:
        _check_shapes(token_logp, token_logp_old, mask, adv)
        logp = sequence_logp(token_logp, mask, cfg.length_normalize)  # [B]
        logp_old = sequence_logp(token_logp_old.detach(), mask, cfg.length_normalize)  # [B]
        policy = -adv.detach() * logp  # [B]
        kl = (cfg.tau / 2) * (logp - logp_old) ** 2  # [B]
        return LossOutput((policy + kl).mean(),
                          {"policy": policy.mean().detach(), "kl": kl.mean().detach()})


@dataclass(frozen=True)
class GRPOLoss:
    """GRPO baseline: group-normalised advantages and PPO's clipped token ratio.

        A_j = (r_j - mean(r)) / (std(r) + eps)          (sample std over the group; 0 if k == 1)
        rho_t = exp(logp_t - logp_old_t)
        loss_j = -(1 / |m_j|) sum_t m_t * min(rho_t A_j, clip(rho_t, 1 - eps_c, 1 + eps_c) A_j)

    averaged over samples (eps_c = ``algo.clip_eps``; no KL to a reference model).
    Terms: ``clip_frac`` (share of masked tokens whose gradient the clip removes),
    ``ratio_mean`` (mean rho over masked tokens).
    """

    eps: float = GROUP_STD_EPS
    """Added to the group std so all-equal groups give 0, not NaN."""

    def advantages(self, rewards: Tensor, group_index: Tensor, cfg: AlgoConfig) -> Tensor:
        stats = group_stats(rewards, group_index)
        return stats.over_std(rewards.double() - stats.mean, self.eps).to(rewards.dtype)  # [N]

    def __call__(self, token_logp: Tensor, token_logp_old: Tensor, mask: Tensor, adv: Tensor,
                 cfg: AlgoConfig) -> LossOutput:
        _check_shapes(token_logp, token_logp_old, mask, adv)
        m = mask.to(token_logp.dtype)  # [B, T]
        a = adv.detach()[:, None]  # [B, 1]
        ratio = (token_logp - token_logp_old.detach()).exp()  # [B, T]
        clipped = ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)  # [B, T]
        token_loss = -torch.minimum(ratio * a, clipped * a)  # [B, T]
        per_sample = (token_loss * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # [B]
        cut = ((ratio > 1 + cfg.clip_eps) & (a > 0)) | ((ratio < 1 - cfg.clip_eps) & (a < 0))  # [B, T]
        tokens = m.sum().clamp(min=1.0)
        return LossOutput(per_sample.mean(), {
            "clip_frac": ((cut.to(m.dtype) * m).sum() / tokens).detach(),
            "ratio_mean": ((ratio * m).sum() / tokens).detach(),
        })


class RLOOLoss:
    """REINFORCE leave-one-out baseline, importance-corrected per token for passes after the first.

        A_j = r_j - (1 / (k - 1)) sum_{i != j} r_i = k / (k - 1) * (r_j - mean(r))   (0 if k == 1)
        rho_t = exp(logp_t - logp_old_t)                (logp_old: the iteration's sampling policy)
        loss_j = -A_j * sum_t m_t * rho_t

    averaged over samples. Its gradient is ``-A_j sum_t m_t rho_t grad logp_t``: on the first pass
    (policy = logp_old, rho = 1) exactly REINFORCE's ``-A_j grad logp_j``; on later passes
    (``algo.updates_per_iteration > 1``) each token's gradient is reweighted by pi / pi_old, so the extra
    passes stay an estimate of the current policy's gradient instead of running off-policy uncorrected.
    (Mirror descent and ReST need no such weight: their objectives are defined on the samples of pi_old.)
    Terms: ``policy`` (the loss), ``logp`` (mean sample logp), ``ratio_mean`` (mean rho over masked tokens).
    """

    def advantages(self, rewards: Tensor, group_index: Tensor, cfg: AlgoConfig) -> Tensor:
        stats = group_stats(rewards, group_index)
        k = stats.count  # [N]
        adv = (rewards.double() - stats.mean) * k / (k - 1).clamp(min=1)  # [N]
        return torch.where(k > 1, adv, 0.0).to(rewards.dtype)

    def __call__(self, token_logp: Tensor, token_logp_old: Tensor, mask: Tensor, adv: Tensor,
                 cfg: AlgoConfig) -> LossOutput:
        _check_shapes(token_logp, token_logp_old, mask, adv)
        m = mask.to(token_logp.dtype)  # [B, T]
        ratio = (token_logp - token_logp_old.detach()).exp() * m  # [B, T], 0 off the loss mask
        loss = (-adv.detach() * ratio.sum(-1)).mean()
        logp = sequence_logp(token_logp, mask, normalize=False)  # [B]
        return LossOutput(loss, {"policy": loss.detach(), "logp": logp.mean().detach(),
                                 "ratio_mean": (ratio.sum() / m.sum().clamp(min=1.0)).detach()})


@dataclass(frozen=True)
class ReSTLoss:
    """ReST-style baseline: fit only correct samples (no negative gradient, paper Fig. 10).

        A_j = 1 if r_j > threshold else 0      ("correct": reward above ``threshold``, default 0;
                                                 wrong samples score <= 0 even with the length
                                                 reward or repeat penalty added)
        loss = -sum_j A_j * logp_j / max(1, sum_j A_j)

    i.e. the mean sequence NLL over the minibatch's correct samples (logp: sum of masked token
    log-probs, or their mean with ``algo.length_normalize``), so the step size does not shrink
    with the share of wrong samples; 0 for a minibatch without a correct sample.
    Terms: ``nll`` (the loss), ``kept_frac`` (share of samples with A = 1).
    """

    threshold: float = 0.0
    """A sample is correct (kept) when its reward is strictly above this."""

    def advantages(self, rewards: Tensor, group_index: Tensor, cfg: AlgoConfig) -> Tensor:
        _dense_groups(rewards, group_index)  # the same shape checks as the other losses
        return (rewards > self.threshold).to(rewards.dtype)  # [N]

    def __call__(self, token_logp: Tensor, token_logp_old: Tensor, mask: Tensor, adv: Tensor,
                 cfg: AlgoConfig) -> LossOutput:
        _check_shapes(token_logp, token_logp_old, mask, adv)
        logp = sequence_logp(token_logp, mask, cfg.length_normalize)  # [B]
        a = adv.detach()  # [B]
        loss = -(a * logp).sum() / a.sum().clamp(min=1.0)
        return LossOutput(loss, {"nll": loss.detach(), "kept_frac": (a > 0).to(logp.dtype).mean()})


MIRROR_DESCENT, GRPO, RLOO, REST = MirrorDescentLoss(), GRPOLoss(), RLOOLoss(), ReSTLoss()
"""The built-in losses, registered by name in ``kimi_rl.registries.LOSSES``."""
