"""The long2short stage (k1.5 section 2.4): four short models from a run's long-CoT model, all evaluated.

Departs from the paper: the "short" model of merging is the run's SFT warm-up by default
(``long2short.short_model``; ``short_sft`` is the paper's short-CoT model, measured to merge badly here); the samples of the
long-CoT model are drawn once and feed both shortest rejection sampling and DPO; (b) fine-tunes the
merged model on the shortest correct responses (merge + shortest rejection sampling).
"""
from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from kimi_rl.config import Config, ConfigError, SFTConfig
from kimi_rl.config.tools import Long2ShortConfig
from kimi_rl.long2short.methods import Sample, dpo_rows, merge_models, shortest_rejection_sampling
from kimi_rl.runs import DONE, RunPaths, config_hash, is_done, mark_done
from kimi_rl.tasks import TaskData
from kimi_rl.tasks.base import Problem
from kimi_rl.config.loader import save_config
from kimi_rl.long2short.data import ResponseSFTDataModule, sample_scored, write_jsonl
from kimi_rl.long2short.dpo import run_dpo
from kimi_rl.long2short.report import write_report
from kimi_rl.models.modeling import load_model, load_tokenizer
from kimi_rl.models.vision import is_vision_folder, load_processor
from kimi_rl.pipeline import base_model, cached_warm_up, evaluate_folder, log, run_rl
from kimi_rl.rl.schedule import shortened
from kimi_rl.rollout.weights import save_policy
from kimi_rl.sft import SFTModule
from kimi_rl.tasks import load_task
from kimi_rl.trainer_factory import build_trainer, set_threads

# ---------------------------------------------------------------- shortest rejection sampling + SFT


def pick_problems(problems: Sequence[Problem], k: int, seed: int) -> list[Problem]:
    """``k`` problems drawn without replacement (all of them when there are fewer), in a seeded order."""
    return random.Random(f"long2short-{seed}").sample(list(problems), min(k, len(problems)))


def run_rows_sft(init_dir: str | Path, rows: Sequence[dict], out_dir: str | Path, cfg: Config,
                 log_root: str | Path, steps: int = 40, lr: float = 5e-4, tokens_per_step: int = 4096,
                 problems: Mapping[str, Problem] | None = None) -> Path:
    """Fine-tune ``init_dir`` on SFT rows ``{"uid", "question", "response"}`` with ``SFTModule`` (loss on response
    tokens); writes the HF folder ``out_dir`` and TensorBoard scalars under ``log_root/tb/sft``. A vision model sees
    each row's images: its problem's, from ``problems`` by the row's ``uid``."""
    import lightning as L

    set_threads(cfg.trainer)
    L.seed_everything(cfg.run.seed, verbose=False)
    sft = SFTConfig(max_steps=steps, tokens_per_step=tokens_per_step, lr=lr, warmup_steps=min(5, steps),
                    log_every=1)
    tok = load_tokenizer(init_dir)
    module = SFTModule(load_model(init_dir, cfg.model.dtype), sft)
    processor = load_processor(init_dir) if is_vision_folder(init_dir) else None
    dm = ResponseSFTDataModule(rows, tok, cfg.data, tokens_per_step, cfg.run.seed, problems, processor)
    trainer = build_trainer(cfg.trainer, Path(log_root), "sft", steps, [], log_every_n_steps=1,
                            enable_progress_bar=False)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    save_policy(module.model, tok, Path(out_dir), trainer.is_global_zero)
    trainer.strategy.barrier()
    log(f"SFT on {len(rows)} rows: {steps} steps in {time.perf_counter() - t0:.0f} s -> {out_dir}")
    return Path(out_dir)


# ---------------------------------------------------------------- the four methods


@dataclass
class ScoredProblems:
    problems: list[Problem]
    samples: list[list[Sample]]
    """``samples[i]``: the n scored responses to ``problems[i]``."""


@dataclass
class Long2ShortRun:
    """What the methods share: the config, the two input models, and the long model's samples."""

    cfg: Config
    opts: Long2ShortConfig
    task: TaskData
    long_dir: Path
    short_dir: Path
    scored: Optional[ScoredProblems] = None

    @property
    def root(self) -> Path:
        return RunPaths(self.cfg.run.dir, self.cfg.run.name).root / "long2short"

    def problems_by_uid(self) -> dict[str, Problem]:
        """The task's problems by uid (rows of the long model's samples name theirs: a vision model's images)."""
        return {p.uid: p for p in self.task.train + self.task.heldout}

    def method_paths(self, method: str) -> RunPaths:
        """``runs/<name>/long2short/<method>/``: the model is its ``final_model``, logs its ``tb``."""
        return RunPaths(self.cfg.run.dir, f"{self.cfg.run.name}/long2short/{method}")

    def key(self, method: str, *extra) -> str:
        """What a method's result depends on: both input models' files, the config sections that shape
        training data and updates (not ``eval``), and ``extra``."""
        c = self.cfg
        return config_hash(method, _fingerprint(self.long_dir), _fingerprint(self.short_dir), c.run.seed, c.model,
                           c.data, c.rollout, c.algo, c.phase, c.trainer.precision, *extra)

    def long_samples(self) -> ScoredProblems:
        """n scored samples per picked training problem from the long-CoT model (drawn once)."""
        if self.scored is None:
            o = self.opts
            problems = pick_problems(self.task.train, o.problems, self.cfg.run.seed)
            samples = sample_scored(self.long_dir, problems, self.cfg, self.task.verifier, o.samples_per_problem,
                                    o.temperature, self.cfg.rollout.max_response_tokens)
            self.scored = ScoredProblems(problems, samples)
            write_jsonl([{"uid": p.uid, "question": p.question, "samples": [vars(s) for s in ss]}
                         for p, ss in zip(problems, samples)], self.root / "samples.jsonl")
        return self.scored


def _fingerprint(folder: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir() if p.is_file())


def _cached(folder: Path, key: str) -> bool:
    return is_done(folder) and json.loads((folder / DONE).read_text() or "{}").get("key") == key


def _require_data(count: int, what: str, opts: Long2ShortConfig) -> None:
    if count == 0:
        raise ConfigError(f"long2short.problems: 0 {what} from {opts.problems} problems x "
                          f"{opts.samples_per_problem} samples; raise long2short.problems or "
                          f"long2short.samples_per_problem, or train the long model further")


def build_merge(run: Long2ShortRun) -> Path:
    """(a) ``merge_weight * long + (1 - merge_weight) * short`` (the short-CoT model, ``input_models``)."""
    out, key = run.method_paths("merge").final_model, run.key("merge", run.opts.merge_weight)
    if not _cached(out, key):
        merge_models(run.long_dir, run.short_dir, out, run.opts.merge_weight)
        mark_done(out, {"key": key})
    return out


def build_merge_srs(run: Long2ShortRun) -> Path:
    """(b) the merged model fine-tuned on the long model's shortest correct responses."""
    o, paths = run.opts, run.method_paths("merge_srs")
    merged = build_merge(run)
    key = run.key("merge_srs", o.merge_weight, o.problems, o.samples_per_problem, o.temperature, o.sft_steps,
                  o.sft_lr, o.sft_tokens_per_step)
    if not _cached(paths.final_model, key):
        scored = run.long_samples()
        srs = shortest_rejection_sampling(scored.problems, scored.samples)
        write_jsonl(srs.rows, paths.root / "srs.jsonl")
        _require_data(len(srs.rows), "SFT rows (no problem had a correct sample)", run.opts)
        run_rows_sft(merged, srs.rows, paths.final_model, run.cfg, paths.root, o.sft_steps, o.sft_lr,
                     o.sft_tokens_per_step, run.problems_by_uid())
        mark_done(paths.final_model, {"key": key, "rows": len(srs.rows),
                                      "skipped_no_correct": srs.skipped_no_correct})
    return paths.final_model


def build_dpo(run: Long2ShortRun) -> Path:
    """(c) DPO of the long model (also the reference) on shortest-correct vs longer responses."""
    o, paths = run.opts, run.method_paths("dpo")
    key = run.key("dpo", o.problems, o.samples_per_problem, o.temperature, o.dpo_ratio, o.dpo_beta, o.dpo_lr,
                  o.dpo_steps, o.dpo_pairs_per_step)
    if not _cached(paths.final_model, key):
        scored = run.long_samples()
        pairs = dpo_rows(scored.problems, scored.samples, o.dpo_ratio)
        write_jsonl(pairs.rows, paths.root / "pairs.jsonl")
        _require_data(len(pairs.rows), "DPO pairs (no problem had a correct and a longer sample)", run.opts)
        run_dpo(run.long_dir, pairs.rows, paths.final_model, run.cfg, paths.root, o.dpo_beta, o.dpo_lr,
                o.dpo_steps, o.dpo_pairs_per_step, run.problems_by_uid())
        mark_done(paths.final_model, {"key": key, "pairs": len(pairs.rows),
                                      "skipped_no_pairs": pairs.skipped_no_pairs})
    return paths.final_model


def long2short_rl_config(cfg: Config, opts: Long2ShortConfig) -> Config:
    """The config of (d): RL from the long model with the length reward on from the first iteration at
    ``phase.long2short_len_reward_weight`` and responses capped at ``phase.long2short_max_response_tokens``."""
    return dataclasses.replace(
        cfg,
        run=dataclasses.replace(cfg.run, name=f"{cfg.run.name}/long2short/rl", resume=None),
        algo=dataclasses.replace(cfg.algo, len_reward_weight=cfg.phase.long2short_len_reward_weight,
                                 len_warmup_iterations=0, len_schedule="constant"),
        rollout=dataclasses.replace(shortened(cfg.rollout, cfg.phase.long2short_max_response_tokens),
                                    prompts_per_iteration=opts.rl_prompts_per_iteration),
        rl=dataclasses.replace(cfg.rl, iterations=opts.rl_iterations, checkpoint_every=0, eval_every=0),
        # run_rl's own before/after check stays small: all models are evaluated alike afterwards
        eval=dataclasses.replace(cfg.eval, samples=1, max_problems_per_level=2),
    )


def build_rl(run: Long2ShortRun) -> Path:
    """(d) long2short RL: a second RL phase from the long-CoT model."""
    paths = run.method_paths("rl")
    key = run.key("rl", run.opts.rl_iterations, run.opts.rl_prompts_per_iteration)
    if not _cached(paths.final_model, key):
        run_rl(long2short_rl_config(run.cfg, run.opts), paths, run.task, run.long_dir)
        info = json.loads((paths.final_model / DONE).read_text() or "{}")
        mark_done(paths.final_model, {**info, "key": key})
    return paths.final_model


BUILDERS = {"merge": build_merge, "merge_srs": build_merge_srs, "dpo": build_dpo, "rl": build_rl}


# ---------------------------------------------------------------- the stage


def input_models(cfg: Config, opts: Optional[Long2ShortConfig] = None) -> tuple[Path, Path]:
    """The run's long-CoT model (``runs/<name>/final_model``) and the short one: the run's cached SFT warm-up
    model, or with ``long2short.short_model: short_sft`` the warm-up's recipe on short traces
    (``short_cot_model``); the base model when ``sft.enabled`` is false. Raises ConfigError when the long
    model or the warm-up is missing."""
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    if not is_done(paths.final_model):
        raise ConfigError(f"run.name={cfg.run.name}: no finished long-CoT model at {paths.final_model}; "
                          f"run `kimi-rl train` (make train) with the same overrides first")
    if not cfg.sft.enabled:
        return paths.final_model, base_model(cfg, paths)
    if (opts or cfg.long2short).short_model == "short_sft":
        if cfg.data.source == "arithmetic":
            return paths.final_model, short_cot_model(cfg)
        log(f"long2short: data.source={cfg.data.source} has no short traces to generate; the merge's short model "
            f"is the run's SFT warm-up")
    warmup = cached_warm_up(cfg)
    if warmup is None:
        raise ConfigError(f"sft: no cached SFT warm-up model for this config in {paths.cache}; run `kimi-rl train` "
                          f"with the same data/model/sft overrides first")
    return paths.final_model, warmup


def short_cot_model(cfg: Config) -> Path:
    """The merge's short-CoT partner (paper 2.4: a long-CoT and a short-CoT model are averaged): the SFT warm-up
    run on traces with no redundant re-checks and no error-then-correction steps (``data.max_rechecks=0``,
    ``data.correction_prob=0``), from the same base model as the long one, so the two share an initialisation;
    cached under the run's ``cache/`` like the warm-up (the same settings reuse it). Only the built-in task
    generates traces (``input_models`` keeps the warm-up for other sources)."""
    from kimi_rl.pipeline import base_model as build_base, run_sft

    short = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_rechecks=0, correction_prob=0.0))
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    log("long2short: the short-CoT model for merging: the SFT warm-up on traces without re-checks or corrections")
    return run_sft(short, paths, load_task(short.data, cfg.run.seed), build_base(short, paths))


def run_long2short(cfg: Config, opts: Long2ShortConfig, long_dir: Optional[Path] = None,
                   short_dir: Optional[Path] = None):
    """Build ``opts.methods`` from the run's long-CoT model into ``runs/<name>/long2short/<method>/``
    (finished ones are reused while their inputs and settings are unchanged), evaluate the long model and
    each short one on the held-out split, and write the table and plot; returns the Long2ShortReport.

    ``long_dir`` / ``short_dir`` replace the run's models (``input_models``) when both are given."""
    from omegaconf import OmegaConf

    if cfg.trainer.devices * cfg.trainer.num_nodes > 1:
        raise ConfigError("trainer.devices: long2short runs in one process; use trainer.devices=1")
    if long_dir is None or short_dir is None:
        long_dir, short_dir = input_models(cfg, opts)
    run = Long2ShortRun(cfg, opts, load_task(cfg.data, cfg.run.seed), long_dir, short_dir)
    save_config(cfg, run.root / "config.yaml")
    (run.root / "long2short.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(opts)))
    log(f"long2short: long model {long_dir}, short model {short_dir} -> {run.root}")
    models, details = {"long": long_dir}, {}
    for method in opts.methods:
        t0 = time.perf_counter()
        models[method] = BUILDERS[method](run)
        details[method] = json.loads((models[method] / DONE).read_text() or "{}")
        log(f"long2short: {method} ready in {time.perf_counter() - t0:.0f} s: {models[method]}")
    eval_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(
        cfg.eval, max_problems_per_level=opts.eval_max_problems_per_level or cfg.eval.max_problems_per_level))
    results = {name: evaluate_folder(eval_cfg, folder, run.task, name) for name, folder in models.items()}
    return write_report(run.root, models, results, details)
