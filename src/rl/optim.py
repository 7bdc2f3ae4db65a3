"""Optimizers by name (``algo.optimizer``, registered in ``kimi_rl.registries.OPTIMIZERS``): each builds a torch
optimizer from the policy's parameters and the ``algo`` section."""
from __future__ import annotations

import torch


def adamw(params, algo) -> torch.optim.Optimizer:
    """AdamW with ``algo.lr`` and ``algo.weight_decay``."""
    return torch.optim.AdamW(params, lr=algo.lr, weight_decay=algo.weight_decay)


def sgd(params, algo) -> torch.optim.Optimizer:
    """SGD with ``algo.lr``, ``algo.momentum`` and ``algo.weight_decay``."""
    return torch.optim.SGD(params, lr=algo.lr, momentum=algo.momentum, weight_decay=algo.weight_decay)
