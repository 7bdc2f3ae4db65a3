"""The process-wide random generators (python, numpy, torch CPU and CUDA) as plain values: captured and restored
around an in-process engine call (``kimi_rl.rollout.requests.preserved_rng``) and saved per rank in checkpoints
(``KimiRLModule.on_save_checkpoint``; plain types, as Lightning loads with ``weights_only=True``)."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """torch (CPU and, once initialised, every CUDA device), python and numpy RNG states as plain types
    (checkpoints load with weights_only=True); saved per rank, so a GPU resume samples what a continuous run did."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_version": 3,
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            raise RuntimeError(f"the checkpoint holds CUDA RNG states of {len(cuda)} devices but this process "
                               f"sees {torch.cuda.device_count()}: resume on the same GPUs per process")
        torch.cuda.set_rng_state_all(cuda)
