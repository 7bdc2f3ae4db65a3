"""Test helper: TensorBoard scalars of a run folder."""
from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def event_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Scalars by tag and step over every event file of ``folder``, oldest file first, so a step
    logged twice (a killed run, then its resume) keeps the later value."""
    out: dict[str, dict[int, float]] = {}
    for f in sorted(Path(folder).glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        ea = EventAccumulator(str(f))
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            for e in ea.Scalars(tag):
                out.setdefault(tag, {})[e.step] = e.value
    return out
