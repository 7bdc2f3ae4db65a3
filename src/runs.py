"""Where a run's files go, and content-addressed caches (base model, SFT warm-up).

Only global rank 0 writes; other ranks read what rank 0 finished (a ``.done`` marker).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
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


_LOG_FILE: Path | None = None


def set_log_file(path: Path | None) -> None:
    """Also append ``log`` lines (timestamped) to ``path`` (rank 0), e.g. ``runs/<name>/kimi-rl.log``: progress
    of a long run is in a file, not only on a terminal. None: terminal only."""
    global _LOG_FILE
    _LOG_FILE = None if path is None else Path(path)  # its folder is made by the first line (a run refused at
    # start leaves nothing behind)


def log(msg: str) -> None:
    """``[kimi-rl] msg`` on stdout, and in the log file when one is set (rank 0 only)."""
    if not is_rank_zero():
        return
    print(f"[kimi-rl] {msg}", flush=True)
    if _LOG_FILE is not None:
        _LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
        with open(_LOG_FILE, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")


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
    def log(self) -> Path:
        """The run's log file: what the terminal shows of the run, with progress lines, timestamped."""
        return self.root / "kimi-rl.log"

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


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """TensorBoard scalars by tag and step over the event files directly in ``folder``, oldest file first, so a
    step logged twice (a killed run, then its resume) keeps the later value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for f in sorted(Path(folder).glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            for e in ea.Scalars(tag):
                out.setdefault(tag, {})[e.step] = e.value
    return out
