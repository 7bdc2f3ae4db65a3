"""Real problem data: JSONL / JSON / Parquet problem files, the packaged MATH-500 / AIME sets, prompts.

Not in the paper (its data is private); these feed RL and ``make eval`` with the same Problem type.
"""
from kimi_rl.data.files import (
    DataFileError,
    HeldoutSplit,
    LoadResult,
    load_problem_file,
    reference_answer,
    split_heldout,
)
from kimi_rl.data.mmath import MMATH_SUBSETS, load_mmath
from kimi_rl.data.prompts import build_prompt

__all__ = [
    "DataFileError",
    "HeldoutSplit",
    "LoadResult",
    "MMATH_SUBSETS",
    "build_prompt",
    "load_mmath",
    "load_problem_file",
    "reference_answer",
    "split_heldout",
]
