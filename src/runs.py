"""Where a run's files go, and content-addressed caches (base model, SFT warm-up).

Only global rank 0 writes; other ranks read what rank 0 finished (a ``.done`` marker).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

DONE = ".done"


def global_rank() -> int:
    """This process's rank from the launcher's environment (0 when not distributed)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def is_rank_zero() -> bool:
    return global_rank() == 0


def config_hash(*parts: Any) -> str:
    """Short stable hash of dataclasses / plain values (what a cached result depends on)."""
    norm = [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def is_done(folder: Path) -> bool:
    return (Path(folder) / DONE).is_file()


def mark_done(folder: Path, info: dict | None = None) -> None:
    (Path(folder) / DONE).write_text(json.dumps(info or {}, indent=1))


class RunPaths:
    """Folders of one run: ``<dir>/<name>/`` holds config, logs, checkpoints and models."""

    def __init__(self, run_dir: str, name: str) -> None:
        self.root = Path(run_dir) / name
        self.cache = Path(run_dir) / "cache"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final_model(self) -> Path:
        return self.root / "final_model"

    def sft_cache(self, key: str) -> Path:
        return self.cache / f"sft-{key}"

    def base_cache(self, key: str) -> Path:
        return self.cache / f"base-{key}"
