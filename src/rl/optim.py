"""Optimizers by name (``algo.optimizer``): each builds a torch optimizer from the policy's parameters and
the ``algo`` section."""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from kimi_rl.registry import Registry

OPTIMIZERS: Registry[Callable[[Iterable[torch.nn.Parameter], object], torch.optim.Optimizer]] = Registry("optimizer")
"""Maps ``algo.optimizer`` to ``build(params, algo) -> Optimizer``; ``AlgoConfig`` validation lists these names."""


@OPTIMIZERS.register("adamw")
def adamw(params, algo) -> torch.optim.Optimizer:
    """AdamW with ``algo.lr`` and ``algo.weight_decay``."""
    return torch.optim.AdamW(params, lr=algo.lr, weight_decay=algo.weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, algo) -> torch.optim.Optimizer:
    """SGD with ``algo.lr``, ``algo.momentum`` and ``algo.weight_decay``."""
    return torch.optim.SGD(params, lr=algo.lr, momentum=algo.momentum, weight_decay=algo.weight_decay)
