"""Optimizers by name (``algo.optimizer``, registered in ``kimi_rl.registries.OPTIMIZERS``): each builds a torch
optimizer from the policy's parameters and the ``algo`` section."""
from __future__ import annotations

import torch

from kimi_rl.config import RESET_SCOPES


def adamw(params, algo) -> torch.optim.Optimizer:
    """AdamW with ``algo.lr`` and ``algo.weight_decay``."""
    return torch.optim.AdamW(params, lr=algo.lr, weight_decay=algo.weight_decay)


def sgd(params, algo) -> torch.optim.Optimizer:
    """SGD with ``algo.lr``, ``algo.momentum`` and ``algo.weight_decay``."""
    return torch.optim.SGD(params, lr=algo.lr, momentum=algo.momentum, weight_decay=algo.weight_decay)


def reset_optimizer_state(opt: torch.optim.Optimizer, scope: str = "all") -> None:
    """The paper's per-iteration optimizer reset (``algo.reset_optimizer``), in one of two scopes.

    ``all``: a fresh state. AdamW's next step is then m_hat / sqrt(v_hat) = g / |g| = sign(g) per weight, a step
    of size lr on every weight whatever its gradient.
    ``momentum``: only the first moment is zeroed (AdamW's ``exp_avg``, SGD's ``momentum_buffer``); the second
    moment v and the step count t stay. AdamW's next step is then
    m_hat / sqrt(v_hat) with m = (1 - beta1) g, m_hat = m / (1 - beta1^t), v_hat = v' / (1 - beta2^t):
    gradient-sized (small where |g| is small against sqrt(v)), and the previous iteration's direction, which
    belongs to another mirror-descent subproblem, no longer carries over.
    """
    if scope not in RESET_SCOPES:
        raise ValueError(f"algo.reset_scope: expected one of {RESET_SCOPES}, got {scope!r}")
    if scope == "all":
        opt.state.clear()
        return
    for state in opt.state.values():
        for key in ("exp_avg", "momentum_buffer"):
            if isinstance(state.get(key), torch.Tensor):
                state[key].zero_()
