"""The stages of a run, in the paper's order: base model -> long-CoT SFT warm-up -> RL.

Each stage reads and writes Hugging Face folders; finished stages are cached by config hash.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kimi_rl.config import Config, ConfigError
from kimi_rl.config.loader import save_config
from kimi_rl.eval.evaluate import cap_per_level
from kimi_rl.models.vision import freeze_vision_tower, is_vision_folder, load_processor
from kimi_rl.models.modeling import build_tiny_model, check_model_folder, load_model, load_tokenizer, model_context
from kimi_rl.rollout.weights import save_policy  # noqa: F401  (kimi_rl.pipeline.save_policy, as before)
from kimi_rl.runs import RunPaths, config_hash, is_done, is_rank_zero, log, mark_done, set_log_file
from kimi_rl.tasks import PromptLimit, TaskData, heldout_verifier, load_task
from kimi_rl.callbacks import (HeldoutEval, IterationCheckpoint, PartialRollout, ProgressLog, SampleLogger,
                               SaveHFModel, WeightSync)
from kimi_rl.data.prompts import encode_prompts
from kimi_rl.eval.evaluate import evaluate, samples_per_problem
from kimi_rl.models.tokenizer import build_char_tokenizer
from kimi_rl.rewards import make_verifier
from kimi_rl.rl.datamodule import PromptDataModule
from kimi_rl.rl.module import KimiRLModule
from kimi_rl.rl.sampling import SAMPLERS
from kimi_rl.rl.schedule import RecipeSchedule
from kimi_rl.rollout import open_engine
from kimi_rl.rollout.worker import RolloutWorker
from kimi_rl.sft import SFTDataModule, SFTModule
from kimi_rl.trainer_factory import build_trainer, set_threads


BASE_FORMAT = 2
"""Bumped when the built base model's files change (invalidates cached bases and warm-ups)."""


def prepare(cfg: Config) -> tuple[RunPaths, TaskData]:
    """Validate inputs that could fail late (model folder, data) and save the resolved config."""
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    set_log_file(paths.log)
    if cfg.model.path:
        check_model_folder(cfg.model.path)
    if cfg.sft.enabled and cfg.data.source not in ("arithmetic", "vision_arithmetic"):
        raise ConfigError(f"sft.enabled: the long-CoT warm-up writes traces for the built-in tasks only (arithmetic, "
                          f"vision_arithmetic); set sft.enabled=false for data.source={cfg.data.source}")
    visual_model = cfg.model.arch == "idefics3" if not cfg.model.path else is_vision_folder(cfg.model.path)
    if cfg.data.source == "vision_arithmetic" and not visual_model:
        raise ConfigError("data.source=vision_arithmetic: the questions are images; pick a vision-language model "
                          "(model=tiny_vl, or model.path=<a vision-language folder>)")
    if cfg.rl.enabled:
        resume_path(cfg, paths)  # a bad checkpoint fails now, not after the warm-up (run_rl resolves it again)
    task = load_task(cfg.data, cfg.run.seed, prompt_limit(cfg))
    with_images = [p for p in task.train + task.heldout if "images" in p.meta]
    if with_images and not visual_model:
        raise ConfigError(f"data.path: {len(with_images)} problems of '{cfg.data.path}' have images "
                          f"(field '{cfg.data.image_field}', first: {with_images[0].uid}); pick a vision-language "
                          f"model (model=tiny_vl, or model.path=<a vision-language folder>), or set "
                          f"data.image_field=null to read the questions as text")
    check_verifier(task.verifier, cfg.data.verifier_options, "rl" if cfg.rl.enabled else "eval")
    if (own := own_heldout_verifier(cfg, task)) is not None:
        check_verifier(*own, key="eval.verifier")

    try:  # e.g. a curriculum stage naming a level the data lacks: fail now, not after the warm-up
        SAMPLERS.get(cfg.data.sampler)([p.difficulty for p in task.train], cfg.data, cfg.run.seed)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"data.sampler={cfg.data.sampler}: {e.args[0] if e.args else e}") from None
    if is_rank_zero():
        save_config(cfg, paths.config)
        report = write_skipped_rows(paths, task)
        for line in task.skip_summary():
            log(line)
        if task.skipped:
            log(f"  every skipped row: {report}")
    return paths, task


def prompt_limit(cfg: Config) -> PromptLimit | None:
    """The longest prompt the model takes: its context (``max_position_embeddings`` of ``model.path``, or of the
    built model) minus the longest response the run asks for; None when a model folder does not say."""
    eval_tokens = cfg.eval.max_response_tokens or 0
    key = "eval.max_response_tokens" if eval_tokens > cfg.rollout.max_response_tokens else "rollout.max_response_tokens"
    response = max(eval_tokens, cfg.rollout.max_response_tokens)
    if cfg.model.path:
        context = model_context(cfg.model.path)
        if context is None:
            return None
        source, tokenizer = f"max_position_embeddings={context} of {cfg.model.path}", load_tokenizer(cfg.model.path)
    else:
        context, tokenizer = cfg.model.max_position_embeddings, build_char_tokenizer()
        source = f"model.max_position_embeddings={context}"
    if context - response < 1:
        raise ConfigError(f"{key}: {response} leaves no room for a prompt in the model's context ({source})")
    tokenizer.model_max_length = 1 << 62  # this private copy only counts tokens: no "longer than maximum" warning
    return PromptLimit(tokenizer, context - response, f"{source} - {key}={response}")


def write_skipped_rows(paths: RunPaths, task: TaskData) -> Path:
    """``<run>/skipped_rows.json``: rows read and kept, skips per reason, and every skipped row (rank 0 calls)."""
    path = paths.root / "skipped_rows.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(task.skip_report(), indent=1))
    return path


def own_heldout_verifier(cfg: Config, task: TaskData) -> tuple[str, dict] | None:
    """(name, options) of the held-out verifier when it is not the reward's own (``eval.verifier``), else None."""
    found = heldout_verifier(cfg.data, cfg.eval.verifier)
    return None if found == (task.verifier, dict(cfg.data.verifier_options)) else found


def check_verifier(name: str, options, purpose: str = "eval", key: str = "data.verifier") -> None:
    """Build (and close) the verifier once at start: a bad name or option fails before any training,
    as one ConfigError naming ``data.verifier`` (or ``key``) or ``data.verifier_options``."""
    try:
        verifier = make_verifier(name, options, purpose)
    except ConfigError as e:
        if key != "data.verifier" and str(e).startswith("data.verifier:"):
            raise ConfigError(key + str(e)[len("data.verifier"):]) from None
        raise
    except (KeyError, TypeError, ValueError) as e:  # e.g. an unknown sandbox backend from the code verifier
        detail = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ConfigError(f"data.verifier_options {dict(options or {})} for verifier '{name}': {detail}") from None
    close_verifier(verifier)


def close_verifier(verifier) -> None:
    """``verifier.close()`` for the verifiers that hold a resource (a process pool, a reward model)."""
    close = getattr(verifier, "close", None)
    if close:
        close()


def base_folder(cfg: Config, paths: RunPaths) -> Path:
    """Where the base model is: ``model.path``, or the cache folder of the tiny model built from ``model.*``."""
    if cfg.model.path:
        return Path(cfg.model.path)
    return paths.base_cache(config_hash(cfg.model, cfg.run.seed, BASE_FORMAT))


def base_model(cfg: Config, paths: RunPaths) -> Path:
    """``model.path``, or the tiny model built from ``model.*`` (cached by its config)."""
    if cfg.model.path:
        return check_model_folder(cfg.model.path)
    folder = base_folder(cfg, paths)
    if not is_done(folder):
        if not is_rank_zero():
            raise RuntimeError(f"{folder} is not ready; rank 0 builds it before launching workers")
        build_tiny_model(cfg.model, folder, seed=cfg.run.seed)
        mark_done(folder)
    return folder


SFT_DATA_FIELDS = ("source", "path", "question_field", "answer_field", "difficulty_field", "prompt_template",
                   "use_chat_template", "heldout_fraction", "skip_bad_rows", "levels", "train_per_level",
                   "heldout_per_level", "max_rechecks", "correction_prob")
"""The data keys the SFT warm-up reads: changing the RL sampler or verifier reuses the cached warm-up."""


def engine_logprobs_every(cfg: Config) -> int:
    """Rollouts ask the engine for the sampled tokens' log-probs in iteration 0 and every this many after: every
    iteration when the loss reads them (``algo.recompute_logp_old`` false), else ``rollout.engine_logprobs_every``
    (they are a diagnostic only)."""
    return cfg.rollout.engine_logprobs_every if cfg.algo.recompute_logp_old else 1


def sft_key(cfg: Config, base: Path) -> str:
    data = {k: getattr(cfg.data, k) for k in SFT_DATA_FIELDS}
    if cfg.data.source == "vision_arithmetic":  # its traces changed once: warm-ups of the old ones are not reused
        from kimi_rl.tasks.vision import TRACE_FORMAT

        data["trace_format"] = TRACE_FORMAT
    elif cfg.data.trace_format != "columns":  # keyed only when set: warm-ups cached before the key stay valid
        data["trace_format"] = cfg.data.trace_format
    sft = asdict(cfg.sft)
    if not sft["min_traces_per_level"]:  # keyed only when set: warm-ups cached before the key stay valid
        del sft["min_traces_per_level"]
    return config_hash(str(base.resolve()), data, sft, cfg.run.seed, cfg.model)


def cached_warm_up(cfg: Config) -> Path | None:
    """The finished SFT warm-up model of ``cfg`` in ``run.dir``'s cache, or None (nothing is built)."""
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    out = paths.sft_cache(sft_key(cfg, base_folder(cfg, paths)))
    return out / "model" if is_done(out) else None


def run_sft(cfg: Config, paths: RunPaths, task: TaskData, base: Path) -> Path:
    """Train the warm-up (or reuse a cached one) and return its HF folder."""
    if not cfg.sft.enabled:
        return base
    out = paths.sft_cache(sft_key(cfg, base))
    model_dir = out / "model"
    if is_done(out):
        log(f"SFT warm-up: reusing cached {model_dir}")
        return model_dir

    set_threads(cfg.trainer)
    import lightning as L

    L.seed_everything(cfg.run.seed, verbose=False)
    tok = load_tokenizer(base)
    model = load_model(base, cfg.model.dtype)
    if cfg.model.freeze_vision:
        freeze_vision_tower(model)
    module = SFTModule(model, cfg.sft)
    dm = SFTDataModule(task.train, tok, cfg.data, cfg.sft, cfg.run.seed,
                       load_processor(base) if is_vision_folder(base) else None)

    progress = ProgressLog("SFT step", cfg.sft.max_steps, {"loss": "sft/loss"}, every=cfg.sft.log_every)
    trainer = build_trainer(cfg.trainer, paths.root, "sft", cfg.sft.max_steps, [SaveHFModel(model_dir, tok), progress],
                            log_every_n_steps=cfg.sft.log_every)
    log(f"SFT warm-up: {cfg.sft.max_steps} steps on {len(task.train)} problems -> {model_dir}")
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    if trainer.is_global_zero:
        mark_done(out, {"seconds": time.perf_counter() - t0, "steps": trainer.global_step})
    trainer.strategy.barrier()
    log(f"SFT warm-up done in {time.perf_counter() - t0:.0f} s")
    return model_dir


def evaluate_folder(cfg: Config, model_dir: Path, task: TaskData, name: str):
    """Held-out evaluation with the configured engine; returns an EvalResult."""
    tok = load_tokenizer(model_dir)
    problems = cap_per_level(task.heldout, cfg.eval.max_problems_per_level)
    prompts = encode_prompts(problems, tok, cfg.data)
    max_tokens = cfg.eval.max_response_tokens or cfg.rollout.max_response_tokens
    max_len = max(len(p) for p in prompts) + max_tokens
    context = model_context(model_dir)
    if context is not None:
        max_len = min(max_len, context)
    verifier = make_verifier(*heldout_verifier(cfg.data, cfg.eval.verifier))
    try:
        with open_engine(cfg.rollout, model_dir, cfg.model, cfg.run.seed, max_len) as engine:
            return evaluate(engine, tok, problems, prompts, verifier,
                            samples_per_problem(problems, cfg.eval.samples, cfg.eval.balance_levels),
                            cfg.eval.temperature, max_tokens)
    finally:
        close_verifier(verifier)


def write_eval(paths: RunPaths, results: dict, filename: str) -> Path:
    path = paths.root / filename
    if is_rank_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=1))
    return path


RL_PROGRESS = {"reward": "reward/mean", "accuracy": "reward/accuracy", "tokens": "response/length_mean",
               "rollout s": "time/rollout_s", "train s": "time/train_s"}
"""What each RL iteration's progress line shows (label -> metric)."""


def run_rl(cfg: Config, paths: RunPaths, task: TaskData, init_dir: Path):
    """k1.5 RL from the HF folder ``init_dir``; returns (final model folder, HeldoutEval results)."""
    import lightning as L

    set_threads(cfg.trainer)
    L.seed_everything(cfg.run.seed, verbose=False)
    tok = load_tokenizer(init_dir)
    verifier = make_verifier(task.verifier, cfg.data.verifier_options, purpose="rl")
    own = own_heldout_verifier(cfg, task)
    eval_verifier = None if own is None else make_verifier(*own)  # None: the reward's verifier
    heldout = cap_per_level(task.heldout, cfg.eval.max_problems_per_level)
    heldout_prompts = encode_prompts(heldout, tok, cfg.data)
    eval_tokens = cfg.eval.max_response_tokens or cfg.rollout.max_response_tokens
    dm = PromptDataModule(task, tok, cfg.data, cfg.run.seed)
    train_prompts = dm.prompt_ids(task.train)  # tokenized once: the datamodule keeps them for the rollouts
    longest_prompt = max(len(p) for p in heldout_prompts + train_prompts)
    max_len = longest_prompt + max(cfg.rollout.max_response_tokens, eval_tokens) + 8
    context = model_context(init_dir)  # prepare() dropped or refused prompts that leave no room for a response
    if context is not None:
        max_len = min(max_len, context)

    policy = load_model(init_dir, cfg.model.dtype)
    if cfg.model.freeze_vision:
        freeze_vision_tower(policy)
    module = KimiRLModule(policy, cfg.algo)
    worker = RolloutWorker(cfg.rollout, cfg.model, init_dir, verifier, cfg.run.seed, max_len, cfg.algo.repeat_penalty,
                           engine_logprobs_every(cfg))
    heldout_eval = HeldoutEval(worker, heldout, heldout_prompts, cfg.eval.samples, cfg.eval.temperature, eval_tokens,
                               cfg.rl.eval_every, eval_verifier, cfg.eval.balance_levels)
    callbacks = [  # one iteration: rollout (batch start) -> update (module) -> weight sync (batch end)
        PartialRollout(worker, RecipeSchedule.from_config(cfg)),
        WeightSync(worker, cfg.rollout.weight_sync),
        heldout_eval,
        SampleLogger(tok, cfg.rl.sample_log_every),
        IterationCheckpoint(paths.checkpoints, cfg.rl.checkpoint_every),
        SaveHFModel(paths.final_model, tok),
        ProgressLog("RL iteration", cfg.rl.iterations, RL_PROGRESS),
    ]
    ckpt = resume_path(cfg, paths)
    trainer = build_trainer(cfg.trainer, paths.root, "rl", -1, callbacks, max_epochs=1, fresh=ckpt is None,
                            limit_train_batches=cfg.rl.iterations, log_every_n_steps=1,
                            **HeldoutEval.trainer_kwargs(cfg.rl.eval_every))
    if trainer.is_global_zero and trainer.logger is not None and task.skipped:
        trainer.logger.log_metrics(task.skip_metrics(), step=0)
    log(f"RL: {cfg.rl.iterations} iterations x {cfg.rollout.prompts_per_iteration} prompts x "
        f"{cfg.rollout.samples_per_prompt} samples, loss {cfg.algo.loss}, engine {cfg.rollout.engine}")
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    finally:
        for v in (verifier, eval_verifier):
            close_verifier(v)
    if trainer.is_global_zero:
        mark_done(paths.final_model, {"seconds": time.perf_counter() - t0, "iterations": module.iteration})
    trainer.strategy.barrier()
    log(f"RL done: {module.iteration} iterations in {time.perf_counter() - t0:.0f} s -> {paths.final_model}")
    return paths.final_model, heldout_eval.results


@dataclass
class TrainResult:
    """What ``train`` did: the run's folders, the RL start model and its result."""

    paths: RunPaths
    warm_up: Path
    """The SFT warm-up model (the base model with ``sft.enabled`` false): RL's start."""
    final: Path | None
    """The RL policy's folder; None when ``rl.enabled`` is false."""
    results: dict
    """Held-out ``EvalResult`` before / after RL ({} without RL)."""
    rl_seconds: float = 0.0


def train(cfg: Config) -> TrainResult:
    """``kimi-rl train``: check the inputs, the SFT warm-up (cached), then RL with the held-out evaluation before
    and after it, written to ``eval_rl.json`` as ``before RL`` / ``after RL``."""
    paths, task = prepare(cfg)
    init = run_sft(cfg, paths, task, base_model(cfg, paths))
    if not cfg.rl.enabled:
        return TrainResult(paths, init, None, {})
    t0 = time.perf_counter()
    final, results = run_rl(cfg, paths, task, init)
    seconds = time.perf_counter() - t0
    if results:
        write_eval(paths, {f"{k} RL": v for k, v in results.items()}, "eval_rl.json")
    return TrainResult(paths, init, final, results, seconds)


def resume_path(cfg: Config, paths: RunPaths) -> str | None:
    """``run.resume``: auto (the run's last checkpoint when there is one, else previous.ckpt), a path, or None.

    The checkpoint is opened before training starts, so a corrupt one fails at once (or, with auto, falls back)."""
    if not cfg.run.resume:
        return None
    if cfg.run.resume == "auto":
        found = _auto_checkpoint(paths.checkpoints)
    else:
        if not Path(cfg.run.resume).exists():
            raise ConfigError(f"run.resume: checkpoint '{cfg.run.resume}' does not exist")
        check_checkpoint(Path(cfg.run.resume))
        found = cfg.run.resume
    if found is not None:
        _check_not_finished(Path(found), cfg.rl.iterations)
    return found


def _check_not_finished(path: Path, iterations: int) -> None:
    """The checkpoint a finished run writes at its end has its (one) epoch over: Lightning would train no further
    iteration from it, so asking for more is an error instead of a silent no-op."""
    if path.is_dir():
        return
    import torch

    ckpt = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
    progress = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    done = int(ckpt.get("kimi_rl", {}).get("iteration", 0))
    if progress.get("completed", 0) >= 1 and done < iterations:
        raise ConfigError(f"run.resume: '{path}' is the end of a finished run of {done} iterations; it cannot be "
                          f"continued to rl.iterations={iterations}. Start a new run.name from its final_model "
                          f"(model.path=<run>/final_model sft.enabled=false)")


def _auto_checkpoint(folder: Path) -> str | None:
    """``run.resume=auto``: last.ckpt, or previous.ckpt when last.ckpt is missing (a kill between the two renames
    of a save) or unreadable (a kill or a full disk while writing). An unreadable last.ckpt is moved aside to
    ``last.ckpt.corrupt`` (rank 0), so that the next save does not rotate it into previous.ckpt."""
    last, previous = folder / "last.ckpt", folder / "previous.ckpt"
    if not last.exists() and not previous.exists():
        return None
    problem = checkpoint_problem(last) if last.exists() else "missing"
    if problem is None:
        return str(last)
    if not previous.exists():
        raise ConfigError(f"run.resume=auto: checkpoint '{last}' is {problem}, and there is no {previous.name}")
    if (earlier := checkpoint_problem(previous)) is not None:
        raise ConfigError(f"run.resume=auto: checkpoint '{last}' is {problem}, and '{previous}' is {earlier}")
    if not last.exists():
        return str(previous)
    log(f"run.resume=auto: {last} is {problem}; resuming from {previous} (one save earlier); the unreadable "
        f"file is kept as {last.name}.corrupt")
    if is_rank_zero():
        corrupt = folder / f"{last.name}.corrupt"
        if corrupt.is_dir():
            import shutil

            shutil.rmtree(corrupt)
        elif corrupt.exists():
            corrupt.unlink()
        os.replace(last, corrupt)
    return str(previous)


def checkpoint_problem(path: Path) -> str | None:
    """What makes ``path`` unusable as a Lightning checkpoint (a file, or an FSDP folder), or None when it loads."""
    if path.is_dir():
        return None if (path / ".metadata").is_file() else "not a complete distributed checkpoint (no .metadata)"
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # truncated zip, wrong format, ...
        first = (str(e).splitlines() or [""])[0].split(". ")[0][:200]  # the first sentence says what failed
        return f"corrupt or truncated ({type(e).__name__}: {first})"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        return "not a Lightning checkpoint (no state_dict)"
    return None


def check_checkpoint(path: Path) -> None:
    """Raise a clear error when ``path`` is not a readable Lightning checkpoint (file or FSDP folder)."""
    problem = checkpoint_problem(path)
    if problem is not None:
        previous = path.parent / "previous.ckpt"
        hint = f"; the previous checkpoint is {previous} (run.resume={previous})" \
            if previous.exists() and previous != path else ""
        raise ConfigError(f"run.resume: checkpoint '{path}' is {problem}{hint}")
