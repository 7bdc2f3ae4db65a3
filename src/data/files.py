"""Problem files (JSONL, JSON, Parquet) read into Problems, and a deterministic held-out split.

Not from the paper. Every error names the file and the line (JSONL) or row (JSON, Parquet).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

from kimi_rl.data.images import PLACEHOLDER, row_images
from kimi_rl.data.problem import UNLABELLED, Problem

SUFFIXES = (".jsonl", ".json", ".parquet")
DEFAULT_DIFFICULTY = 1
_LEVEL = re.compile(r"^\s*(?:level\s*)?([+-]?\d+)\s*$", re.IGNORECASE)


class DataFileError(ValueError):
    """A problem file that cannot be used; the message names the file and line or row."""


class SkippedRow(NamedTuple):
    """A row left out with ``data.skip_bad_rows``."""

    where: str
    """``file:line`` (JSONL) or ``file:row N`` (JSON, Parquet), or the problem's uid."""
    reason: str
    """Short kind of fault, the same for all rows with it (counted per reason)."""
    detail: str
    """The full message."""


class _BadRow(ValueError):
    """What is wrong with one row: ``reason`` is its short kind, the message the details."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class LoadResult:
    problems: list[Problem]
    skipped: int
    """Malformed rows left out (only with ``skip_bad_rows``)."""
    source: str
    """The file read."""
    skip_reasons: list[str] = field(default_factory=list)
    """Why each skipped row was left out, with its line or row."""
    skipped_rows: list[SkippedRow] = field(default_factory=list)
    """The skipped rows with their location and short reason (for counts per reason)."""
    locations: dict[str, str] = field(default_factory=dict)
    """``file:line`` (or ``file:row N``) of each loaded problem, by uid."""


class HeldoutSplit(NamedTuple):
    train: list[Problem]
    heldout: list[Problem]


@dataclass(frozen=True)
class _RawRow:
    index: int
    """0-based row number among the file's data rows (blank JSONL lines not counted): the uid's suffix."""
    where: str
    """``line N`` (1-based, JSONL) or ``row N`` (0-based, JSON / Parquet) for messages."""
    fields: Any = None
    error: str | None = None
    reason: str = ""
    """Short kind of ``error`` (counted when the row is skipped)."""

    def location(self, path: Path) -> str:
        """``file:N`` for a JSONL line, ``file:row N`` otherwise."""
        return f"{path}:{self.where[5:]}" if self.where.startswith("line ") else f"{path}:{self.where}"


def reference_answer(text: str) -> str:
    """The final answer inside a reference: GSM8K's text after the last ``####`` with thousands
    commas and a final period removed; any other text (a number, LaTeX, a ``\\boxed{}`` solution) stripped.

    >>> reference_answer("She pays 3 * 4 = <<3*4=12>>12 dollars.\\n#### 1,200")
    '1200'
    >>> reference_answer(" \\\\frac{1}{2} ")
    '\\\\frac{1}{2}'
    """
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "").rstrip(".").strip()
    return text.strip()


def _jsonl_rows(path: Path) -> Iterator[_RawRow]:
    index = 0
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"line {n}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield _RawRow(index, where, error=f"not valid UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r})",
                          reason="not valid UTF-8")
        else:
            try:
                yield _RawRow(index, where, fields=json.loads(text))
            except json.JSONDecodeError as err:
                yield _RawRow(index, where, error=f"bad JSON ({err.msg} at column {err.colno})", reason="bad JSON")
        index += 1


def _json_rows(path: Path) -> Iterator[_RawRow]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataFileError(f"{path}: line {line}: not valid UTF-8 (byte offset {err.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        hint = " (one object per line is JSON Lines: name the file .jsonl)" if err.msg == "Extra data" else ""
        raise DataFileError(f"{path}: line {err.lineno}: bad JSON ({err.msg} at column {err.colno}){hint}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataFileError(f'{path}: expected a list of rows or {{"data": [rows]}}, got {type(data).__name__}')
    for i, row in enumerate(data):
        yield _RawRow(i, f"row {i}", fields=row)


def _parquet_rows(path: Path) -> Iterator[_RawRow]:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataFileError(f"{path}: not a readable Parquet file ({err})") from None
    for i, row in enumerate(rows):
        yield _RawRow(i, f"row {i}", fields=row)


def _difficulty(value: Any, name: str) -> int:
    """An integer level from an int, an integral float, or text like ``"3"`` / ``"Level 3"``."""
    if value is None:
        return DEFAULT_DIFFICULTY
    if isinstance(value, bool):
        raise _BadRow(f"field '{name}' must be an integer level",
                      f"field '{name}' must be an integer level, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (m := _LEVEL.match(value)):
        return int(m.group(1))
    raise _BadRow(f"field '{name}' must be an integer level",
                  f"field '{name}' must be an integer level (e.g. 3 or \"Level 3\"), got {value!r}")


def _text(row: dict, name: str, numbers_ok: bool) -> str:
    if name not in row:
        raise _BadRow(f"missing field '{name}'",
                      f"missing field '{name}' (row has: {', '.join(map(str, row)) or 'no fields'})")
    value = row[name]
    if numbers_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _BadRow(f"field '{name}' must be text", f"field '{name}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise _BadRow(f"field '{name}' is empty")
    return value


@dataclass(frozen=True)
class ImageColumn:
    """How a file's rows carry images (``kimi_rl.data.images``)."""

    field: str = "image"
    """The column: a path (relative to the file's folder), a base64 data URI, bytes, or a list of them."""
    sides: tuple[int, int] = (8, 4096)
    """(min, max) pixels of each side of an image; outside it the row is bad ("image too small" / "too large")."""


def _problem(raw: _RawRow, stem: str, q_field: str, a_field: str, d_field: str | None,
             id_field: str | None, images: ImageColumn | None = None, folder: Path = Path(".")) -> Problem:
    """One row as a Problem; raises ValueError saying what is wrong with the row."""
    if raw.error:
        raise _BadRow(raw.reason or raw.error, raw.error)
    row = raw.fields
    if not isinstance(row, dict):
        raise _BadRow("not an object with fields", f"expected an object with fields, got {type(row).__name__}")
    question = _text(row, q_field, numbers_ok=False)
    answer = _text(row, a_field, numbers_ok=True)
    if not reference_answer(answer):
        raise _BadRow(f"field '{a_field}' has an empty final answer after '####'")
    difficulty = _difficulty(row.get(d_field), d_field) if d_field else DEFAULT_DIFFICULTY
    row_id = row.get(id_field) if id_field else None
    uid = f"{stem}:{row_id if row_id is not None else raw.index}"
    meta = {k: v for k, v in row.items() if k not in (q_field, a_field)}
    if images is not None and row.get(images.field) is not None:
        del meta[images.field]
        meta["images"], question = row_images(row[images.field], question, images.field, folder, images.sides)
    elif images is not None and PLACEHOLDER in question:
        raise _BadRow("image placeholders do not match the images",
                      f"the question has '{PLACEHOLDER}' but the row has no '{images.field}' field")
    return Problem(uid=uid, question=question, answer=answer, difficulty=difficulty, meta=meta)


def load_problem_file(
    path: str | Path,
    question_field: str = "question",
    answer_field: str = "answer",
    difficulty_field: str | None = "difficulty",
    skip_bad_rows: bool = False,
    id_field: str | None = "id",
    images: ImageColumn | None = None,
) -> LoadResult:
    """Problems of a ``.jsonl``, ``.json`` (a list of rows, or ``{"data": [...]}``) or ``.parquet`` file.

    ``uid`` is ``"<file stem>:<id field>"`` when a row has ``id_field``, else ``"<file stem>:<row>"``
    (0-based row number). A file without difficulties (or ``difficulty_field=None``: labels not read) is
    all level 1; see ``_mixed_labels`` for one that labels only some rows. A malformed row raises
    ``DataFileError`` naming the file and line/row, or with ``skip_bad_rows`` is left out and counted.
    Whole-file problems (unreadable JSON or Parquet, an unknown suffix, no usable rows) always raise.
    With ``images``, a row's image cell is checked (read, sized) and kept in ``meta["images"]`` as a list of absolute
    paths or bytes; a missing, unreadable or wrong-size image is a bad row.
    """
    path = Path(path)
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}
    if path.suffix.lower() not in readers:
        raise DataFileError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"problem file {path} does not exist")
    problems: list[Problem] = []
    reasons: list[str] = []
    skipped: list[SkippedRow] = []
    locations: dict[str, str] = {}
    seen: dict[str, str] = {}
    unlabelled: list[tuple[int, str]] = []  # (index in problems, where) of rows without a difficulty
    for raw in readers[path.suffix.lower()](path):
        try:
            problem = _problem(raw, path.stem, question_field, answer_field, difficulty_field, id_field, images,
                               path.parent)
            if problem.uid in seen:
                raise _BadRow("duplicate uid", f"duplicate uid '{problem.uid}' (first at {seen[problem.uid]})")
        except ValueError as err:
            message = f"{path}: {raw.where}: {err}"
            if not skip_bad_rows:
                raise DataFileError(message + " (set data.skip_bad_rows to skip such rows)") from None
            reasons.append(message)
            skipped.append(SkippedRow(raw.location(path), getattr(err, "reason", str(err)), str(err)))
            continue
        seen[problem.uid] = raw.where
        locations[problem.uid] = raw.location(path)
        if difficulty_field and isinstance(raw.fields, dict) and raw.fields.get(difficulty_field) is None:
            unlabelled.append((len(problems), raw.where))
        problems.append(problem)
    if not problems:
        first = f"; first: {reasons[0]}" if reasons else ""
        raise DataFileError(f"{path}: no usable rows ({len(reasons)} skipped{first})")
    problems = _mixed_labels(path, problems, unlabelled, difficulty_field, skip_bad_rows)
    return LoadResult(problems=problems, skipped=len(reasons), source=str(path), skip_reasons=reasons,
                      skipped_rows=skipped, locations=locations)


def _mixed_labels(path: Path, problems: list[Problem], unlabelled: list[tuple[int, str]], field: str,
                  allow: bool) -> list[Problem]:
    """A file with no difficulty anywhere is all level 1. One that labels some rows but not others is
    an error naming the first unlabelled row, or with ``allow`` (data.skip_bad_rows) a warning, and
    those rows become ``UNLABELLED`` (drawn in every curriculum stage)."""
    if not unlabelled or len(unlabelled) == len(problems):
        return problems
    if not allow:
        raise DataFileError(f"{path}: {unlabelled[0][1]}: field '{field}' is missing while other rows have it "
                            f"({len(unlabelled)} such rows; set data.skip_bad_rows to sample them in every "
                            f"curriculum stage instead)")
    warnings.warn(f"{path}: {len(unlabelled)} rows without '{field}' (first: {unlabelled[0][1]}) are sampled "
                  f"in every curriculum stage", stacklevel=3)
    out = list(problems)
    for i, _ in unlabelled:
        out[i] = dataclasses.replace(out[i], difficulty=UNLABELLED)
    return out


def _uid_rank(uid: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest()


def split_heldout(problems: Sequence[Problem], fraction: float, seed: int) -> HeldoutSplit:
    """Hold out ``round(fraction * n)`` problems, clamped to [1, n - 1] when ``fraction > 0`` and
    n >= 2 (none when n < 2): those with the smallest ``sha256(seed:uid)``. Depends only on the uids and the seed, never on
    the file order; both parts keep the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    n = len(problems)
    n_held = min(max(round(fraction * n), 1), n - 1) if fraction > 0 and n >= 2 else 0
    held = set(sorted((p.uid for p in problems), key=lambda u: _uid_rank(u, seed))[:n_held])
    return HeldoutSplit(
        train=[p for p in problems if p.uid not in held],
        heldout=[p for p in problems if p.uid in held],
    )
