"""``kimi-rl difficulty``: model-based difficulty labels (k1.5 section 2.3.4) written into a problem file.

Departs from the paper: levels are fixed equal-width bins of the failure rate over n samples of one model
(the paper only says "pass rate over n samples"); every row is labelled, training and held-out alike.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from kimi_rl.config import Config, ConfigError
from kimi_rl.config.tools import DifficultyConfig  # noqa: F401  (its section of the config)
from kimi_rl.tasks.base import Problem
from kimi_rl.config.loader import load_config
from kimi_rl.data import DataFileError, load_problem_file
from kimi_rl.data.prompts import encode_prompts
from kimi_rl.models.modeling import check_model_folder, load_tokenizer
from kimi_rl.pipeline import log
from kimi_rl.rewards import make_verifier
from kimi_rl.rewards.scoring import sample_and_score
from kimi_rl.rollout import open_engine
from kimi_rl.tasks import DEFAULT_VERIFIER
from kimi_rl.tasks.code import CodeTaskError, load_code_problems

_SKIP_HINT = " (set data.skip_bad_rows to skip such rows)"


class SampleCount(NamedTuple):
    correct: int
    samples: int


class Label(NamedTuple):
    pass_rate: float
    level: int


@dataclass(frozen=True)
class LevelSummary:
    problems: dict[int, int]
    """Level -> rows labelled with it (every level 1..L, zeros included)."""
    mean_pass_rate: dict[int, float]
    """Level -> mean pass rate of its rows (absent for empty levels)."""
    overall_pass_rate: float


@dataclass(frozen=True)
class DifficultyReport:
    out: Path
    rows: int
    samples: int
    summary: LevelSummary


def difficulty_level(pass_rate: float, levels: int) -> int:
    """Level from a pass rate by equal-width bins of the failure rate:
    ``level = min(1 + floor((1 - p) * L), L)``, so p = 1 is level 1 (easy) and p = 0 is level L (hard).

    ``(1 - p) * L`` is rounded to 9 decimals first so that float noise (1 - 0.9 = 0.0999...) does not
    move a pass rate that sits on a bin edge into the easier bin.

    >>> [difficulty_level(p, 3) for p in (1.0, 0.7, 2 / 3, 0.5, 1 / 3, 0.0)]
    [1, 1, 2, 2, 3, 3]
    """
    if not 0.0 <= pass_rate <= 1.0:
        raise ValueError(f"pass rate must be in [0, 1], got {pass_rate}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    return min(1 + math.floor(round((1.0 - pass_rate) * levels, 9)), levels)


def labels_from_counts(counts: Sequence[SampleCount], levels: int) -> list[Label]:
    """Per problem: pass rate ``p = correct / n`` and its ``difficulty_level(p, L)``."""
    out = []
    for c in counts:
        if c.samples < 1 or not 0 <= c.correct <= c.samples:
            raise ValueError(f"bad count {c}: need 0 <= correct <= samples and samples >= 1")
        p = c.correct / c.samples
        out.append(Label(pass_rate=p, level=difficulty_level(p, levels)))
    return out


def label_rows(rows: Sequence[dict], labels: Sequence[Label], difficulty_field: str,
               pass_rate_field: str) -> list[dict]:
    """Copies of ``rows`` with ``difficulty_field`` = level and ``pass_rate_field`` = pass rate; every
    other field, the field order (a new field goes last) and the row order kept."""
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    return [{**row, difficulty_field: lab.level, pass_rate_field: lab.pass_rate} for row, lab in zip(rows, labels)]


def summarize(labels: Sequence[Label], levels: int) -> LevelSummary:
    """Rows per level (1..L) and mean pass rate per level and overall."""
    by_level = {lv: [lab.pass_rate for lab in labels if lab.level == lv] for lv in range(1, levels + 1)}
    return LevelSummary(
        problems={lv: len(ps) for lv, ps in by_level.items()},
        mean_pass_rate={lv: sum(ps) / len(ps) for lv, ps in by_level.items() if ps},
        overall_pass_rate=sum(lab.pass_rate for lab in labels) / len(labels) if labels else 0.0,
    )


def output_path(data_path: str | Path, out: str | None, overwrite: bool) -> Path:
    """Where labels go: ``out``, else ``<stem>.difficulty<ext>`` beside the input. Refuses the input itself
    unless ``out`` names it and ``overwrite`` is set, and a format other than the input's."""
    src = Path(data_path)
    dst = Path(out).expanduser() if out else src.with_name(f"{src.stem}.difficulty{src.suffix}")
    if dst.suffix.lower() != src.suffix.lower():
        raise ConfigError(f"difficulty.out: '{dst}' must have the input's format ({src.suffix}, like data.path)")
    if dst.resolve() == src.resolve() and not (out and overwrite):
        raise ConfigError(f"difficulty.out: '{dst}' is the input file data.path; set difficulty.overwrite=true "
                          "to replace it, or choose another difficulty.out")
    return dst


# ---------------------------------------------------------------- files


def read_rows(path: Path) -> tuple[list[dict], Any]:
    """Data rows of a .jsonl / .json file (blank JSONL lines dropped, as the loaders do) and the JSON
    wrapper object (``{"data": [...], ...}``) or None."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        return [json.loads(line) for line in text.split("\n") if line.strip()], None
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return data["data"], data
    return data, None


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` beside ``path``, then ``os.replace`` so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_rows(path: Path, rows: list[dict], wrapper: Any, suffix: str) -> Path:
    """JSONL: one object per line; JSON: the list, or the wrapper with its ``data`` replaced."""
    if suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        text = json.dumps({**wrapper, "data": rows} if wrapper is not None else rows, ensure_ascii=False, indent=2)
    return _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_labelled_file(src: Path, dst: Path, labels: Sequence[Label], difficulty_field: str,
                        pass_rate_field: str) -> Path:
    """The input file with the two label columns set, in the input's format; Parquet keeps every other
    column's type and position (a replaced column keeps its position too)."""
    if src.suffix.lower() != ".parquet":
        rows, wrapper = read_rows(src)
        return write_text_rows(dst, label_rows(rows, labels, difficulty_field, pass_rate_field),
                               wrapper, src.suffix.lower())
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    if table.num_rows != len(labels):
        raise ValueError(f"{src}: {table.num_rows} rows but {len(labels)} labels")
    columns = {difficulty_field: pa.array([lab.level for lab in labels], pa.int64()),
               pass_rate_field: pa.array([lab.pass_rate for lab in labels], pa.float64())}
    for name, column in columns.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, column) if i >= 0 else table.append_column(name, column)
    return _atomic_write(dst, lambda tmp: pq.write_table(table, tmp))


# ---------------------------------------------------------------- sampling


def load_file_problems(cfg: Config) -> list[Problem]:
    """Every row of ``data.path`` as a Problem, in file order (no split, no skipped rows: a label per row)."""
    data = cfg.data
    if not Path(data.path).is_file():
        raise ConfigError(f"data.path: '{data.path}' does not exist")
    try:
        if data.verifier == "code":
            return list(load_code_problems(data.path, data.question_field).problems)
        # the labels being estimated are not read: a file labelled on some rows only loads too
        return list(load_problem_file(data.path, data.question_field, data.answer_field,
                                      difficulty_field=None).problems)
    except (DataFileError, CodeTaskError) as e:
        raise ConfigError(f"data.path: {str(e).replace(_SKIP_HINT, '')}; every row gets a label, "
                          "so every row must load (data.skip_bad_rows does not apply here)") from None


def count_correct(engine, tokenizer, problems: Sequence[Problem], prompts: list[list[int]], verifier,
                  samples: int, temperature: float, max_tokens: int, top_p: float = 1.0,
                  batch_problems: int = 128, progress: Callable[[int], Any] | None = None) -> list[SampleCount]:
    """``samples`` responses per problem, ``batch_problems`` prompts per engine call, each verified as in
    ``kimi_rl.eval.evaluate.evaluate`` (correct: score > 0.5); ``progress(k)`` after each call of k problems."""
    counts: list[SampleCount] = []
    for start in range(0, len(problems), batch_problems):
        batch = problems[start : start + batch_problems]
        for s in sample_and_score(engine, tokenizer, batch, prompts[start : start + batch_problems], verifier,
                                  samples, temperature, max_tokens, top_p):
            counts.append(SampleCount(correct=sum(s.correct()), samples=len(s.texts)))
        if progress is not None:
            progress(len(batch))
    return counts


def sample_counts(cfg: Config, opts: DifficultyConfig, model_dir: Path, problems: list[Problem]) -> list[SampleCount]:
    """One engine (``rollout.engine``) on ``model_dir`` and one verifier, both closed after use."""
    from tqdm import tqdm

    tok = load_tokenizer(model_dir)
    prompts = encode_prompts(problems, tok, cfg.data)
    max_tokens = cfg.eval.max_response_tokens or cfg.rollout.max_response_tokens
    verifier = make_verifier(cfg.data.verifier or DEFAULT_VERIFIER["file"], cfg.data.verifier_options)
    try:
        with open_engine(cfg.rollout, model_dir, cfg.model, cfg.run.seed, max(map(len, prompts)) + max_tokens) as engine, \
                tqdm(total=len(problems), unit="problem", desc="difficulty", dynamic_ncols=True) as bar:
            return count_correct(engine, tok, problems, prompts, verifier, opts.samples, cfg.eval.temperature,
                                 max_tokens, cfg.rollout.top_p, opts.batch_problems, bar.update)
    finally:
        close = getattr(verifier, "close", None)  # verifiers are plain callables; some hold a pool
        if close:
            close()


class DifficultyInputs(NamedTuple):
    src: Path
    """The problem file (``data.path``)."""
    dst: Path
    model_dir: Path


def check_inputs(cfg: Config, opts: DifficultyConfig) -> DifficultyInputs:
    """Everything that can fail before a model loads: the data source, the output path, the model folder."""
    if cfg.data.source != "file":
        raise ConfigError(f"data.source={cfg.data.source}: `kimi-rl difficulty` labels a problem file; "
                          "set data.source=file and data.path=FILE (e.g. data=gsm8k_small)")
    src = Path(cfg.data.path)
    dst = output_path(src, opts.out, opts.overwrite)
    folder = opts.model or cfg.model.path
    if not folder:
        raise ConfigError("no model to sample: give difficulty.model=FOLDER or model.path=FOLDER")
    model_dir = check_model_folder(folder, key="difficulty.model" if opts.model else "model.path")
    return DifficultyInputs(src, dst, model_dir)


def estimate_difficulty(cfg: Config, opts: DifficultyConfig,
                        inputs: DifficultyInputs | None = None) -> DifficultyReport:
    """Label every row of ``data.path`` with its level and pass rate and write the copy to ``inputs.dst``."""
    inputs = inputs or check_inputs(cfg, opts)
    problems = load_file_problems(cfg)
    labels = labels_from_counts(sample_counts(cfg, opts, inputs.model_dir, problems), opts.levels)
    write_labelled_file(inputs.src, inputs.dst, labels, cfg.data.difficulty_field, opts.pass_rate_field)
    return DifficultyReport(out=inputs.dst, rows=len(labels), samples=opts.samples,
                            summary=summarize(labels, opts.levels))


def format_report(report: DifficultyReport) -> str:
    """Rows and mean pass rate per level, the overall mean, and the file written."""
    s = report.summary
    lines = [f"{'level':>5} | {'problems':>8} | {'mean pass rate':>14}", "-" * 33]
    for lv, n in s.problems.items():
        rate = f"{s.mean_pass_rate[lv]:>14.3f}" if lv in s.mean_pass_rate else f"{'-':>14}"
        lines.append(f"{lv:>5} | {n:>8} | {rate}")
    lines += ["-" * 33, f"{'all':>5} | {report.rows:>8} | {s.overall_pass_rate:>14.3f}",
              f"pass rate over {report.samples} samples per problem; wrote {report.out}"]
    return "\n".join(lines)


def run_difficulty(words: Sequence[str]) -> int:
    """The ``kimi-rl difficulty`` command; returns the exit code (config and data errors raise ConfigError)."""
    cfg = load_config(list(words))
    opts = cfg.difficulty
    inputs = check_inputs(cfg, opts)
    log(f"difficulty of {inputs.src} with {inputs.model_dir}: {opts.samples} samples per problem at "
        f"T={cfg.eval.temperature}, {opts.levels} levels, engine {cfg.rollout.engine}")
    report = estimate_difficulty(cfg, opts, inputs)
    log("difficulty levels from pass rates:\n" + format_report(report))
    return 0
