"""The stages of a run, in the paper's order: base model -> long-CoT SFT warm-up -> RL.

Each stage reads and writes Hugging Face folders; finished stages are cached by config hash.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from kimi_rl.config import Config
from kimi_rl.config_loader import save_config
from kimi_rl.modeling import build_tiny_model, check_model_folder, load_model, load_tokenizer, save_model
from kimi_rl.runs import RunPaths, config_hash, is_done, is_rank_zero, mark_done
from kimi_rl.tasks import TaskData, load_task


def log(msg: str) -> None:
    if is_rank_zero():
        print(f"[kimi-rl] {msg}", flush=True)


def prepare(cfg: Config) -> tuple[RunPaths, TaskData]:
    """Validate inputs that could fail late (model folder, data) and save the resolved config."""
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    if cfg.model.path:
        check_model_folder(cfg.model.path)
    task = load_task(cfg.data, cfg.run.seed)
    if is_rank_zero():
        save_config(cfg, paths.config)
    return paths, task


def base_model(cfg: Config, paths: RunPaths) -> Path:
    """``model.path``, or the tiny model built from ``model.*`` (cached by its config)."""
    if cfg.model.path:
        return check_model_folder(cfg.model.path)
    folder = paths.base_cache(config_hash(cfg.model, cfg.run.seed))
    if not is_done(folder):
        if not is_rank_zero():
            raise RuntimeError(f"{folder} is not ready; rank 0 builds it before launching workers")
        build_tiny_model(cfg.model, folder, seed=cfg.run.seed)
        mark_done(folder)
    return folder


def sft_key(cfg: Config, base: Path) -> str:
    return config_hash(str(base.resolve()), cfg.data, cfg.sft, cfg.run.seed, cfg.model)


def run_sft(cfg: Config, paths: RunPaths, task: TaskData, base: Path) -> Path:
    """Train the warm-up (or reuse a cached one) and return its HF folder."""
    if not cfg.sft.enabled:
        return base
    out = paths.sft_cache(sft_key(cfg, base))
    model_dir = out / "model"
    if is_done(out):
        log(f"SFT warm-up: reusing cached {model_dir}")
        return model_dir
    from kimi_rl.sft import SFTDataModule, SFTModule
    from kimi_rl.trainer_factory import build_trainer, set_threads

    set_threads(cfg.trainer)
    import lightning as L

    L.seed_everything(cfg.run.seed, verbose=False)
    tok = load_tokenizer(base)
    model = load_model(base, cfg.model.dtype)
    module = SFTModule(model, cfg.sft)
    dm = SFTDataModule(task.train, tok, cfg.data, cfg.sft, cfg.run.seed)
    trainer = build_trainer(cfg.trainer, paths.root, "sft", cfg.sft.max_steps, [],
                            log_every_n_steps=cfg.sft.log_every)
    log(f"SFT warm-up: {cfg.sft.max_steps} steps on {len(task.train)} problems -> {model_dir}")
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    if trainer.is_global_zero:
        save_model(module.model, tok, model_dir)
        mark_done(out, {"seconds": time.perf_counter() - t0, "steps": trainer.global_step})
    trainer.strategy.barrier()
    log(f"SFT warm-up done in {time.perf_counter() - t0:.0f} s")
    return model_dir


def evaluate_folder(cfg: Config, model_dir: Path, task: TaskData, name: str):
    """Held-out evaluation with the configured engine; returns an EvalResult."""
    from kimi_rl.evaluate import evaluate
    from kimi_rl.prompts import encode_prompts
    from kimi_rl.rewards import VERIFIERS
    from kimi_rl.rollout import build_engine

    tok = load_tokenizer(model_dir)
    problems = _cap_per_level(task.heldout, cfg.eval.max_problems_per_level)
    prompts = encode_prompts(problems, tok, cfg.data)
    max_tokens = cfg.eval.max_response_tokens or cfg.rollout.max_response_tokens
    max_len = max(len(p) for p in prompts) + max_tokens
    engine = build_engine(cfg.rollout, model_dir, cfg.model, cfg.run.seed, max_len)
    try:
        result = evaluate(engine, tok, problems, prompts, VERIFIERS.get(task.verifier)(),
                          cfg.eval.samples, cfg.eval.temperature, max_tokens)
    finally:
        close = getattr(engine, "close", None)
        if close:
            close()
    return result


def _cap_per_level(problems, cap: int):
    seen: dict[int, int] = {}
    out = []
    for p in problems:
        if seen.get(p.difficulty, 0) < cap:
            seen[p.difficulty] = seen.get(p.difficulty, 0) + 1
            out.append(p)
    return out


def write_eval(paths: RunPaths, results: dict, filename: str) -> Path:
    path = paths.root / filename
    if is_rank_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=1))
    return path
