"""``kimi-rl eval``: evaluate model folders on a dataset (pass@k, majority vote, tokens, per level).

Writes a table, ``runs/<run.name>/eval/<dataset>.json``, TensorBoard scalars under ``tb/eval/`` and,
for several models, the paper's Fig. 7 view (accuracy against mean response tokens) as a PNG.

Besides config overrides, two words are read here (before the config):
  ``models=NAME:PATH,NAME:PATH`` (or bare paths, named after their folders) - the folders to compare;
  ``split=heldout|all`` - evaluate on the held-out problems (default) or on every problem of the data.
Without ``models=`` and without ``model.path``: the run's SFT warm-up ("sft") and RL model ("rl").
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kimi_rl.config import Config, ConfigError, DataConfig
from kimi_rl.tasks.base import Problem
from kimi_rl.config.loader import load_config
from kimi_rl.data import DataFileError
from kimi_rl.data.prompts import encode_prompts
from kimi_rl.eval.evaluate import (EvalResult, cap_per_level as cap, evaluate, format_summary, format_table,
                                   describe_samples, samples_per_problem)
from kimi_rl.models.modeling import check_model_folder, load_tokenizer, model_context
from kimi_rl.pipeline import BASE_FORMAT, log, sft_key
from kimi_rl.rewards import make_verifier
from kimi_rl.rollout import EngineError, open_engine
from kimi_rl.runs import RunPaths, config_hash, is_done
from kimi_rl.tasks import heldout_verifier, load_task
from kimi_rl.tasks.code import CodeTaskError

SPLITS = ("heldout", "all")
GENERIC_FOLDER_NAMES = ("model", "final_model")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path


@dataclass
class EvalArgs:
    models: list[ModelSpec] = field(default_factory=list)
    """From ``models=``; empty: ``model.path`` or the run's own models."""
    split: str = "heldout"
    overrides: list[str] = field(default_factory=list)
    """The remaining words: config overrides."""


@dataclass
class ModelEval:
    spec: ModelSpec
    result: EvalResult
    seconds: float
    outcomes: dict | None = None
    """The verifier's outcome counts for this model (correct / wrong / no_answer / ...), when it keeps them."""


def model_name(path: str | Path) -> str:
    """A short column name for a folder: its name, or ``parent/name`` for generic names.

    >>> model_name("/tmp/kimi_smollm2"), model_name("runs/rl1/final_model")
    ('kimi_smollm2', 'rl1/final_model')
    """
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.name in GENERIC_FOLDER_NAMES and p.parent.name else p.name


def parse_eval_args(words: Sequence[str]) -> EvalArgs:
    """Take ``models=`` and ``split=`` out of the command's words; the rest are config overrides."""
    args = EvalArgs()
    for word in words:
        key, _, value = word.partition("=")
        if key == "models":
            items = [v.strip() for v in value.split(",") if v.strip()]
            if not items:
                raise ConfigError("models=: give NAME:PATH or PATH entries separated by commas")
            for item in items:
                name, sep, path = item.partition(":")
                args.models.append(ModelSpec(name, Path(path)) if sep else ModelSpec(model_name(item), Path(item)))
        elif key == "split":
            if value not in SPLITS:
                raise ConfigError(f"split={value}: not one of {', '.join(SPLITS)}")
            args.split = value
        else:
            args.overrides.append(word)
    names = [m.name for m in args.models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"models=: the name(s) {', '.join(dupes)} appear twice; name them NAME:PATH")
    return args


def _run_config(cfg: Config) -> Config:
    """The config the run was trained with (``runs/<name>/config.yaml``), else ``cfg``."""
    from omegaconf import OmegaConf

    saved = RunPaths(cfg.run.dir, cfg.run.name).config
    if not saved.is_file():
        return cfg
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(saved)))
    except Exception as e:  # noqa: BLE001 - an unreadable saved config is reported by file
        raise ConfigError(f"{saved}: cannot read the run's saved config ({e})") from None


def default_models(cfg: Config) -> list[ModelSpec]:
    """The run's SFT warm-up ("sft", found by its cache key) and final RL model ("rl"), those that exist."""
    run_cfg = _run_config(cfg)
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    found = []
    if run_cfg.sft.enabled:
        base = (Path(run_cfg.model.path).expanduser() if run_cfg.model.path
                else paths.base_cache(config_hash(run_cfg.model, run_cfg.run.seed, BASE_FORMAT)))
        sft = paths.sft_cache(sft_key(run_cfg, base))
        if is_done(sft):
            found.append(ModelSpec("sft", sft / "model"))
    if is_done(paths.final_model):
        found.append(ModelSpec("rl", paths.final_model))
    if not found:
        raise ConfigError(
            f"no model to evaluate: run '{cfg.run.name}' has no SFT warm-up and no {paths.final_model}; "
            "run `make train` first, or give model.path=FOLDER or models=NAME:FOLDER,..."
        )
    return found


def resolve_models(args: EvalArgs, cfg: Config) -> list[ModelSpec]:
    """``models=`` first, then ``model.path``, then the run's own models; every folder checked."""
    if args.models:
        specs = args.models
    elif cfg.model.path:
        specs = [ModelSpec(model_name(cfg.model.path), Path(cfg.model.path))]
    else:
        specs = default_models(cfg)
    for s in specs:
        check_model_folder(s.path, key=f"model '{s.name}'")
    return specs


def select_problems(train: Sequence[Problem], heldout: Sequence[Problem], split: str,
                    cap_per_level: int) -> list[Problem]:
    """The split's problems (``all``: held-out then training, each uid once), the first
    ``cap_per_level`` of each difficulty level."""
    pool = list(heldout) if split == "heldout" else list({p.uid: p for p in [*heldout, *train]}.values())
    return cap(pool, cap_per_level)


def dataset_name(data: DataConfig) -> str:
    """``data.source``, or the data file's stem for ``source: file``."""
    return Path(data.path).stem if data.source == "file" and data.path else data.source


def _pop_outcomes(verifier) -> dict | None:
    """Outcome counts since the last call: ``pop_stats()`` (code) or ``stats`` + ``reset_stats()`` (math)."""
    if hasattr(verifier, "pop_stats"):
        return dict(verifier.pop_stats())
    if hasattr(verifier, "stats") and hasattr(verifier, "reset_stats"):
        stats = dict(verifier.stats)
        verifier.reset_stats()
        return stats
    return None


def evaluate_model(cfg: Config, spec: ModelSpec, problems: list[Problem], verifier) -> ModelEval:
    """One engine on ``spec.path`` (closed after use): n samples per problem, verified on this thread."""
    t0 = time.perf_counter()
    _pop_outcomes(verifier)
    tok = load_tokenizer(spec.path)
    prompts = encode_prompts(problems, tok, cfg.data)
    max_tokens = cfg.eval.max_response_tokens or cfg.rollout.max_response_tokens
    max_len = fit_context(spec, problems, prompts, max(map(len, prompts)) + max_tokens)
    with open_engine(cfg.rollout, spec.path, cfg.model, cfg.run.seed, max_len) as engine:
        result = evaluate(engine, tok, problems, prompts, verifier,
                          samples_per_problem(problems, cfg.eval.samples, cfg.eval.balance_levels),
                          cfg.eval.temperature, max_tokens, cfg.rollout.top_p)
    return ModelEval(spec, result, time.perf_counter() - t0, _pop_outcomes(verifier))


def fit_context(spec: ModelSpec, problems: list[Problem], prompts: list[list[int]], wanted: int) -> int:
    """The engine length for ``spec``: ``wanted`` (longest prompt + response budget) cut at the model's context;
    a prompt that leaves the model no room to answer is a ConfigError naming the problem, so no engine is ever
    asked for more than its context (responses near the limit get shorter budgets, as in RL)."""
    context = model_context(spec.path)
    if context is None:
        return wanted
    for problem, prompt in zip(problems, prompts):
        if len(prompt) >= context:
            raise ConfigError(f"models: {spec.name}={spec.path} takes {context} tokens (max_position_embeddings) but "
                              f"problem {problem.uid} has a {len(prompt)}-token prompt; leave it out of the data or "
                              f"use a model with a longer context")
    return min(wanted, context)


def report_dict(cfg: Config, dataset: str, split: str, verifier: str, evals: list[ModelEval]) -> dict:
    """What the JSON file holds: the settings, then per model its path, seconds and EvalResult figures."""
    return {
        "dataset": dataset,
        "split": split,
        "verifier": verifier,
        "samples": cfg.eval.samples,
        "balance_levels": cfg.eval.balance_levels,
        "temperature": cfg.eval.temperature,
        "max_response_tokens": cfg.eval.max_response_tokens or cfg.rollout.max_response_tokens,
        "engine": cfg.rollout.engine,
        "dtype": cfg.model.dtype,
        "models": {e.spec.name: {"path": str(e.spec.path), "seconds": round(e.seconds, 2),
                                 **e.result.to_dict(), "verifier_outcomes": e.outcomes}
                   for e in evals},
    }


def write_tensorboard(folder: Path, dataset: str, evals: list[ModelEval]) -> list[Path]:
    """Scalars ``<dataset>/<metric>`` at step 0, one subfolder per model (so models overlay in one chart)."""
    from torch.utils.tensorboard import SummaryWriter

    written = []
    for e in evals:
        sub = folder / e.spec.name.replace("/", "_")
        r = e.result
        scalars = {"pass@1": r.accuracy, "mean_tokens": r.mean_tokens}
        scalars.update({f"pass@{k}": v for k, v in r.pass_at_k.items()})
        if r.majority is not None:
            scalars["majority_vote"] = r.majority
        if r.p95_tokens is not None:
            scalars["p95_tokens"] = r.p95_tokens
        scalars.update({f"accuracy_level{lv}": s.accuracy for lv, s in r.per_level.items()})
        writer = SummaryWriter(log_dir=str(sub))
        try:
            for tag, value in scalars.items():
                writer.add_scalar(f"{dataset}/{tag}", value, 0)
        finally:
            writer.close()
        written.append(sub)
    return written


def plot_accuracy_vs_tokens(path: Path, dataset: str, evals: list[ModelEval]) -> Path:
    """pass@1 (%) against mean response tokens, one labelled point per model (the view of Fig. 7)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for e in evals:
        x, y = e.result.mean_tokens, 100 * e.result.accuracy
        ax.scatter([x], [y])
        ax.annotate(e.spec.name, (x, y), textcoords="offset points", xytext=(5, 5))
    n = evals[0].result.samples if evals else 1
    ax.set(xlabel="mean response tokens", ylabel=f"pass@1 (%, mean of {n} samples)",
           title=f"{dataset}: accuracy vs. response length")
    top_y = max([100 * e.result.accuracy for e in evals] + [4.0])
    top_x = max([e.result.mean_tokens for e in evals] + [1.0])
    ax.set_ylim(0, 1.15 * top_y)
    ax.set_xlim(0, 1.15 * top_x)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    return path


def _load_problems(cfg: Config, split: str):
    """Problems and the held-out verifier (name, options); data errors become one-line ConfigErrors."""
    try:
        task = load_task(cfg.data, cfg.run.seed)
    except (DataFileError, CodeTaskError, FileNotFoundError, ImportError) as e:
        raise ConfigError(f"data ({dataset_name(cfg.data)}): {e}") from None
    problems = select_problems(task.train, task.heldout, split, cfg.eval.max_problems_per_level)
    if not problems:
        raise ConfigError(f"eval.max_problems_per_level={cfg.eval.max_problems_per_level}: no problems to evaluate")
    return problems, heldout_verifier(cfg.data, cfg.eval.verifier)


def run_eval(words: Sequence[str]) -> int:
    """The ``kimi-rl eval`` command; returns the exit code (config and data errors raise ConfigError)."""
    args = parse_eval_args(words)
    cfg = load_config(args.overrides)
    specs = resolve_models(args, cfg)
    problems, (verifier_name, verifier_options) = _load_problems(cfg, args.split)
    dataset, root = dataset_name(cfg.data), RunPaths(cfg.run.dir, cfg.run.name).root
    ns = samples_per_problem(problems, cfg.eval.samples, cfg.eval.balance_levels)
    log(f"eval on {dataset} ({args.split}): {describe_samples(problems, ns, cfg.eval.samples)}, "
        f"T={cfg.eval.temperature}, engine {cfg.rollout.engine}, models: "
        + ", ".join(f"{s.name}={s.path}" for s in specs))
    verifier = make_verifier(verifier_name, verifier_options)
    evals = []
    try:
        for spec in specs:
            evals.append(evaluate_model(cfg, spec, problems, verifier))
            log(f"{spec.name}: pass@1 {100 * evals[-1].result.accuracy:.1f}% in {evals[-1].seconds:.0f} s")
    except EngineError as e:
        print(f"kimi-rl: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        close = getattr(verifier, "close", None)
        if close:
            close()
    results = {e.spec.name: e.result for e in evals}
    out = root / "eval"
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{dataset}.json"
    json_path.write_text(json.dumps(report_dict(cfg, dataset, args.split, verifier_name, evals), indent=1))
    write_tensorboard(root / "tb" / "eval", dataset, evals)
    written = [json_path, root / "tb" / "eval"]
    if len(evals) > 1:
        written.append(plot_accuracy_vs_tokens(out / f"{dataset}.png", dataset, evals))
    log(f"{dataset}: per level (acc % = pass@1)\n{format_table(results)}\n\n{format_summary(results)}")
    log("wrote " + ", ".join(str(p) for p in written))
    return 0
