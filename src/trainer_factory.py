"""Build the Lightning Trainer of a stage from ``trainer.*`` config (strategy, threads, logger)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from kimi_rl.config import TrainerConfig
from kimi_rl.runs import is_rank_zero


def set_threads(cfg: TrainerConfig) -> int:
    """One process per device shares the cores: ``threads`` or cores // devices."""
    n = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.devices))
    torch.set_num_threads(n)
    return n


def build_strategy(cfg: TrainerConfig):
    if cfg.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        backend = "nccl" if torch.cuda.is_available() and cfg.accelerator != "cpu" else "gloo"
        return DDPStrategy(process_group_backend=backend)
    if cfg.strategy == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=cfg.devices * cfg.num_nodes, tensor_parallel_size=1)
    return "auto"


def archive_events(folder: Path) -> Path | None:
    """Rank 0 renames ``folder`` to ``folder.<YYYYmmdd-HHMMSS>`` when it holds event files; returns the new path."""
    if not is_rank_zero() or not folder.is_dir() or not any(folder.glob("events.out.tfevents.*")):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(folder.stat().st_mtime))
    target = folder.with_name(f"{folder.name}.{stamp}")
    n = 1
    while target.exists():
        target, n = folder.with_name(f"{folder.name}.{stamp}-{n}"), n + 1
    folder.rename(target)
    return target


def build_trainer(cfg: TrainerConfig, root: Path, stage: str, max_steps: int, callbacks: list,
                  **kwargs) -> L.Trainer:
    """A Trainer writing TensorBoard events to ``root/tb/<stage>`` (``max_steps=-1``: no step cap).

    ``fresh=False`` (a resumed run) appends to that folder; otherwise the events of an earlier run
    there are moved to ``root/tb/<stage>.<time>`` first, so curves of two runs never interleave.
    """
    if kwargs.pop("fresh", True):
        archive_events(Path(root) / "tb" / stage)
    logger = TensorBoardLogger(save_dir=str(root), name="tb", version=stage, default_hp_metric=False)
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=build_strategy(cfg),
        precision=cfg.precision,
        max_steps=max_steps,
        max_epochs=kwargs.pop("max_epochs", -1),
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=kwargs.pop("enable_checkpointing", False),
        log_every_n_steps=kwargs.pop("log_every_n_steps", 10),
        enable_model_summary=False,
        default_root_dir=str(root),
        **kwargs,
    )
