"""Rank-aware helpers: FSDP2 sharding, equal step counts under DDP, per-rank state in checkpoints.

Lightning saves callback and datamodule state from rank 0 only; per-rank state (each rank's
replay buffer and sampler RNG) is gathered into one dict keyed by rank so resume is exact.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def max_across_ranks(value: int, device: torch.device | str = "cpu") -> int:
    """The largest ``value`` over all ranks (DDP needs every rank to take the same steps).

    ``device``: where the collective runs, the strategy's root device (NCCL needs this rank's GPU)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_rank_states(local: Any) -> dict[int, Any]:
    """``{rank: state}`` from every rank (a collective: all ranks must call it)."""
    if not is_distributed():
        return {0: local}
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, local)
    return dict(enumerate(out))


def pick_rank_state(states: dict, load: Callable[[Any], None]) -> None:
    """Load this rank's entry of a ``gather_rank_states`` dict; a single-rank checkpoint loads on all."""
    r = rank()
    key = r if r in states else str(r) if str(r) in states else None
    if key is None:
        if len(states) == 1:
            key = next(iter(states))
        else:
            raise RuntimeError(f"checkpoint holds state for ranks {sorted(states)} but this is rank {r}: "
                               "resume with the same number of processes (trainer.devices x num_nodes)")
    load(states[key])


LAYER_LISTS = ("layers", "text_model.layers", "language_model.layers", "vision_model.encoder.layers")
"""Where the repeated blocks sit under a model's ``model`` attribute: a causal LM's decoder layers; a
vision-language model's (Idefics3-style) text decoder layers and image encoder layers."""


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks FSDP2 shards one by one (``LAYER_LISTS``), text decoder first."""
    inner = getattr(model, "model", model)
    blocks: list[torch.nn.Module] = []
    for path in LAYER_LISTS:
        obj = inner
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            blocks.extend(obj)
    return blocks


def shard_model(model: torch.nn.Module, mesh) -> torch.nn.Module:
    """FSDP2: ``fully_shard`` each repeated block (``repeated_blocks``), then the whole model, over the
    data-parallel mesh."""
    from torch.distributed.fsdp import fully_shard

    blocks = repeated_blocks(model)
    if not blocks:
        where = ", ".join(f"model.{p}" for p in LAYER_LISTS)
        raise ValueError(f"cannot find decoder layers to shard in {type(model).__name__} (looked for {where})")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def data_parallel_mesh(module) -> Any | None:
    """The data-parallel device mesh of Lightning's ModelParallelStrategy, or None under other strategies."""
    try:
        mesh = module.device_mesh
    except (AttributeError, RuntimeError):
        return None
    if mesh is None:
        return None
    return mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
