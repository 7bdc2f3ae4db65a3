"""Test helper: TensorBoard scalars of a run folder (the package's own reader, ``kimi_rl.runs.read_scalars``)."""
from __future__ import annotations

from kimi_rl.runs import read_scalars as event_scalars  # noqa: F401
