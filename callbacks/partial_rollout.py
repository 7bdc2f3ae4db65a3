"""PartialRollout: each iteration, draw prompts, run the engine for one segment, score and pack
the groups that finished (paper 2.6.2). With ``segment_tokens`` null every trajectory runs to
the end in one call, i.e. ordinary full rollouts.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from kimi_rl.config import AlgoConfig, ModelConfig, RolloutConfig
from kimi_rl.distributed import gather_rank_states, pick_rank_state
from kimi_rl.rewards.scoring import score_groups
from kimi_rl.rollout.buffer import RolloutBuffer, release_stats
from kimi_rl.rollout.packing import pack_groups
from kimi_rl.rollout.repetition import RepeatDetector


class PartialRollout(Callback):
    """Owns the colocated engine and the replay buffer; fills ``batch["rollout"]``."""

    def __init__(self, rollout: RolloutConfig, algo: AlgoConfig, model_cfg: ModelConfig, model_dir: Path,
                 verifier, seed: int, max_model_len: int) -> None:
        if rollout.segment_tokens is not None and not 1 <= rollout.segment_tokens <= rollout.max_response_tokens:
            raise ValueError("rollout.segment_tokens must be in [1, rollout.max_response_tokens]")
        self.cfg, self.algo, self.model_cfg = rollout, algo, model_cfg
        self.model_dir, self.verifier, self.seed, self.max_model_len = Path(model_dir), verifier, seed, max_model_len
        self.buffer = RolloutBuffer()
        self.repeat = RepeatDetector(rollout.repeat_ngram, rollout.repeat_count, rollout.repeat_window) \
            if rollout.repeat_ngram > 0 else None
        self.engine = None
        self.tokenizer = None
        self.eos_ids: list[int] = []

    # -- lifecycle -------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.engine is not None:
            return
        from kimi_rl.modeling import eos_ids, load_tokenizer
        from kimi_rl.rollout import build_engine

        self.tokenizer = load_tokenizer(self.model_dir)
        self.eos_ids = eos_ids(self.tokenizer, getattr(pl_module.model, "config", None))
        self.engine = build_engine(self.cfg, self.model_dir, self.model_cfg, self.seed + trainer.global_rank,
                                   self.max_model_len, device=str(trainer.strategy.root_device))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A failed fit skips ``teardown``: close the engine anyway (its memory, the process group it made)."""
        self.teardown(trainer, pl_module, "fit")

    # -- one iteration ---------------------------------------------------------------------
    def new_prompt_count(self) -> int:
        """Prompts to draw so that buffered + new trajectories fill one iteration's capacity."""
        k = self.cfg.samples_per_prompt
        capacity = self.cfg.prompts_per_iteration * k
        unfinished = len(self.buffer.pending())
        return max(0, (capacity - unfinished) // k)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int) -> None:
        t0 = time.perf_counter()
        iteration = pl_module.iteration
        dm = trainer.datamodule
        problems = dm.draw(self.new_prompt_count(), iteration)
        self.buffer.add_groups(problems, dm.prompt_ids(problems), self.cfg.samples_per_prompt, iteration)
        self.engine.wake_up()
        applied = self.buffer.generate(self.engine, iteration, self.cfg.segment_tokens, self.cfg.max_response_tokens,
                                       self.cfg.temperature, self.cfg.top_p, self.eos_ids, self.repeat)
        self.engine.sleep()
        t_gen = time.perf_counter() - t0
        groups = self.buffer.pop_finished_groups()
        scores = score_groups(groups, self.verifier, self.tokenizer, getattr(pl_module, "len_reward_weight", 0.0),
                              self.algo.repeat_penalty)
        dm.update_success([g.problem for g in groups], scores.group_success)
        batch["rollout"] = pack_groups(groups, self.tokenizer.pad_token_id, iteration,
                                       self.cfg.loss_on_old_segments) if groups else None
        batch["groups"] = groups
        self._log_difficulty_histogram(trainer, problems, iteration)
        batch.setdefault("metrics", {}).update(
            self._metrics(groups, scores, applied, problems, dm, t_gen, time.perf_counter() - t0, iteration))

    @staticmethod
    def _log_difficulty_histogram(trainer: L.Trainer, problems: list, iteration: int) -> None:
        """Rank 0's drawn difficulty levels as a TensorBoard histogram (``data/sampled_difficulty``)."""
        experiment = getattr(trainer.logger, "experiment", None) if trainer.is_global_zero else None
        if problems and hasattr(experiment, "add_histogram"):
            levels = torch.tensor([float(p.difficulty) for p in problems])  # [P]
            experiment.add_histogram("data/sampled_difficulty", levels, global_step=iteration)

    def _metrics(self, groups, scores, applied, problems, dm, t_gen: float, t_all: float, iteration: int) -> dict:
        lengths = sorted(len(t.response_ids) for g in groups for t in g.trajectories)
        m: dict[str, float] = {
            "time/rollout_s": t_gen,
            "time/score_s": t_all - t_gen,
            "throughput/rollout_tokens_per_s": applied.new_tokens / max(t_gen, 1e-9),
            "rollout/new_tokens": float(applied.new_tokens),
            "rollout/new_prompts": float(len(problems)),
            "rollout/released_groups": float(len(groups)),
            "reward/verifier_errors": float(scores.verifier_errors),
        }
        if problems:
            m["data/sampled_difficulty_mean"] = sum(p.difficulty for p in problems) / len(problems)
            for level in sorted(set(dm.sampler.difficulties)):  # every level, so ranks average like shares
                m[f"data/sampled_level_{level}_frac"] = sum(p.difficulty == level for p in problems) / len(problems)
        m.update({f"rollout/{k}": v for k, v in self.buffer.stats(iteration).items()})
        m.update({f"data/{k}": float(v) for k, v in dm.sampler.stats().items()})
        if groups:
            rewards = [t.reward for g in groups for t in g.trajectories]
            m.update({
                "reward/mean": sum(rewards) / len(rewards),
                "reward/accuracy": scores.correct / max(scores.samples, 1),
                "reward/all_correct_group_frac": scores.all_correct_groups / len(groups),
                "reward/all_wrong_group_frac": scores.all_wrong_groups / len(groups),
                "response/length_mean": sum(lengths) / len(lengths),
                "response/length_p50": float(lengths[len(lengths) // 2]),
                "response/length_p95": float(lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]),
                "response/length_max": float(lengths[-1]),
            })
            m.update({f"rollout/{k}": v for k, v in release_stats(groups).items()})
        return m

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every rank's buffer and engine sample stream, keyed by rank (Lightning saves rank 0's dict)."""
        local = {"buffer": self.buffer.state_dict()}
        sampling = getattr(self.engine, "sampling_state", None)
        if sampling is not None:
            local["engine"] = sampling()
        return {"ranks": gather_rank_states(local)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pick_rank_state(state_dict["ranks"], self._load_local)

    def _load_local(self, local: dict[str, Any]) -> None:
        self.buffer.load_state_dict(local["buffer"])
        engine_state = local.get("engine")
        if engine_state is not None and self.engine is not None and hasattr(self.engine, "load_sampling_state"):
            self.engine.load_sampling_state(engine_state)
