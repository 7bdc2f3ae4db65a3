"""``kimi-rl curate``: the easy-to-hack filter of k1.5 section 2.3.1, written into a curated copy of a problem file.

As the paper: the model is asked for the answer alone (no chain of thought, a short response cap); a problem whose
answer it guesses within N = 8 tries is dropped. The prompt, N, cap and temperature are ``curate.*`` keys.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from kimi_rl.config import Config, ConfigError, CurateConfig
from kimi_rl.tasks.base import Problem
from kimi_rl.config.loader import load_config
from kimi_rl.data.prompts import encode_prompts
from kimi_rl.eval.difficulty import _atomic_write, count_correct, load_file_problems, read_rows, write_text_rows
from kimi_rl.models.modeling import check_model_folder, load_tokenizer
from kimi_rl.pipeline import log
from kimi_rl.rewards import make_verifier
from kimi_rl.rollout import open_engine
from kimi_rl.tasks import DEFAULT_VERIFIER


@dataclass(frozen=True)
class Guesses:
    """One problem's answer-only tries."""

    right: int
    tries: int
    example: Optional[str] = None
    """The first right guess (what gave the problem away), None when none was right."""

    @property
    def easy_to_hack(self) -> bool:
        """Guessed right at least once within the tries: the paper drops the problem."""
        return self.right > 0


@dataclass(frozen=True)
class CurateResult:
    out: Path
    report: Path
    rows: int
    dropped: list[dict]
    """One entry per dropped row: row index, id, right guesses, tries, the first right guess, the reason."""


class _FirstRight:
    """A verifier that remembers, per problem object, the first response it scored right."""

    def __init__(self, verifier: Callable[[list[str], list[Problem]], list[float]]) -> None:
        self.verifier, self.first = verifier, {}

    def __call__(self, texts: list[str], problems: list[Problem]) -> list[float]:
        scores = self.verifier(texts, problems)
        for text, problem, score in zip(texts, problems, scores):
            if score > 0.5:
                self.first.setdefault(id(problem), text)
        return scores


def guess_answers(engine, tokenizer, problems: Sequence[Problem], prompts: list[list[int]], verifier,
                  opts: CurateConfig, top_p: float = 1.0,
                  progress: Callable[[int], Any] | None = None) -> list[Guesses]:
    """``opts.tries`` answer-only samples per problem of at most ``opts.max_tokens`` tokens, each verified
    (``difficulty.count_correct``: correct means score > 0.5)."""
    recorder = _FirstRight(verifier)
    counts = count_correct(engine, tokenizer, problems, prompts, recorder, opts.tries, opts.temperature,
                           opts.max_tokens, top_p, opts.batch_problems, progress)
    return [Guesses(c.correct, c.samples, recorder.first.get(id(p))) for c, p in zip(counts, problems)]


def dropped_rows(problems: Sequence[Problem], guesses: Sequence[Guesses]) -> list[dict]:
    """Report entries of the easy-to-hack problems (row order)."""
    return [{"row": i, "id": p.uid, "right_guesses": g.right, "tries": g.tries, "first_right_guess": g.example,
             "reason": f"answer guessed without reasoning in {g.right} of {g.tries} tries"}
            for i, (p, g) in enumerate(zip(problems, guesses)) if g.easy_to_hack]


def write_curated_file(src: Path, dst: Path, keep: Sequence[bool]) -> Path:
    """``src`` without the rows whose ``keep`` is False, in its format (JSON wrapper object and Parquet schema
    kept), through ``difficulty``'s readers and writers."""
    if src.suffix.lower() != ".parquet":
        rows, wrapper = read_rows(src)
        if len(rows) != len(keep):
            raise ValueError(f"{src}: {len(rows)} rows but {len(keep)} decisions")
        return write_text_rows(dst, [r for r, k in zip(rows, keep) if k], wrapper, src.suffix.lower())
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    if table.num_rows != len(keep):
        raise ValueError(f"{src}: {table.num_rows} rows but {len(keep)} decisions")
    return _atomic_write(dst, lambda tmp: pq.write_table(table.filter(pa.array(list(keep), pa.bool_())), tmp))


def output_paths(cfg: Config) -> tuple[Path, Path, Path]:
    """(input, curated copy, report): ``curate.out`` else ``<stem>.curated<ext>``; the input itself only when
    named by ``curate.out`` with ``curate.overwrite=true``."""
    opts = cfg.curate
    if cfg.data.source != "file":
        raise ConfigError(f"data.source={cfg.data.source}: `kimi-rl curate` filters a problem file; "
                          "set data.source=file and data.path=FILE (e.g. data=gsm8k_small)")
    src = Path(cfg.data.path)
    dst = Path(opts.out).expanduser() if opts.out else src.with_name(f"{src.stem}.curated{src.suffix}")
    if dst.suffix.lower() != src.suffix.lower():
        raise ConfigError(f"curate.out: '{dst}' must have the input's format ({src.suffix}, like data.path)")
    if dst.resolve() == src.resolve() and not (opts.out and opts.overwrite):
        raise ConfigError(f"curate.out: '{dst}' is the input file data.path; set curate.overwrite=true "
                          "to replace it, or choose another curate.out")
    report = Path(opts.report).expanduser() if opts.report else dst.with_name(f"{dst.stem}.report.json")
    return src, dst, report


def sample_guesses(cfg: Config, model_dir: Path, problems: list[Problem], verifier=None) -> list[Guesses]:
    """One engine (``rollout.engine``) on ``model_dir``, prompts from ``curate.prompt_template``; the verifier is
    ``data.verifier`` unless given; the engine, and the verifier when built here, are closed after use."""
    from tqdm import tqdm

    opts = cfg.curate
    tok = load_tokenizer(model_dir)
    prompts = encode_prompts(problems, tok, dataclasses.replace(cfg.data, prompt_template=opts.prompt_template))
    own = verifier is None
    if own:
        verifier = make_verifier(cfg.data.verifier or DEFAULT_VERIFIER["file"], cfg.data.verifier_options)
    max_model_len = max(map(len, prompts)) + opts.max_tokens
    try:
        with open_engine(cfg.rollout, model_dir, cfg.model, cfg.run.seed, max_model_len) as engine, \
                tqdm(total=len(problems), unit="problem", desc="curate", dynamic_ncols=True) as bar:
            return guess_answers(engine, tok, problems, prompts, verifier, opts, cfg.rollout.top_p, bar.update)
    finally:
        close = getattr(verifier, "close", None) if own else None  # a verifier we built may hold a pool
        if close:
            close()


def curate(cfg: Config, verifier=None) -> CurateResult:
    """Drop the easy-to-hack rows of ``data.path``; write the curated copy and the JSON report."""
    opts = cfg.curate
    src, dst, report = output_paths(cfg)
    folder = opts.model or cfg.model.path
    if not folder:
        raise ConfigError("no model to guess with: give curate.model=FOLDER or model.path=FOLDER")
    model_dir = check_model_folder(folder, key="curate.model" if opts.model else "model.path")
    problems = load_file_problems(cfg)
    guesses = sample_guesses(cfg, model_dir, problems, verifier)
    write_curated_file(src, dst, [not g.easy_to_hack for g in guesses])
    dropped = dropped_rows(problems, guesses)
    doc = {"input": str(src), "out": str(dst), "model": str(model_dir), "rows": len(problems),
           "kept": len(problems) - len(dropped), "dropped": dropped,
           "settings": {k: getattr(opts, k) for k in ("tries", "max_tokens", "temperature", "prompt_template")}}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return CurateResult(dst, report, len(problems), dropped)


def format_dropped(result: CurateResult) -> str:
    """One line per dropped row and a total."""
    lines = [f"{'row':>5}  {'id':<24} {'right':>5}  first right guess", "-" * 60]
    for d in result.dropped:
        guess = (d["first_right_guess"] or "").replace("\n", " ")[:40]
        lines.append(f"{d['row']:>5}  {d['id'][:24]:<24} {d['right_guesses']:>2}/{d['tries']:<2}  {guess!r}")
    kept = result.rows - len(result.dropped)
    lines.append(f"dropped {len(result.dropped)} of {result.rows} rows as easy to hack; kept {kept}")
    return "\n".join(lines)


def run_curate(words: Sequence[str]) -> int:
    """The ``kimi-rl curate`` command."""
    cfg = load_config(list(words))
    opts = cfg.curate
    output_paths(cfg)  # a wrong source or output stops here, before the log line
    log(f"curate {cfg.data.path}: {opts.tries} answer-only guesses per problem, at most {opts.max_tokens} tokens "
        f"at T={opts.temperature}, engine {cfg.rollout.engine}")
    result = curate(cfg)
    log("easy-to-hack filter:\n" + format_dropped(result) + f"\ncurated copy: {result.out}\nreport: {result.report}")
    return 0
