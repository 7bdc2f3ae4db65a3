"""The rollout worker: one rank's engine, partial-rollout buffer, repeat detector, verifier and scoring.

``collect(settings, source)`` is the rollout half of one RL iteration (paper 2.6.2): draw prompts, run the
engine for one segment, score the groups that finished (verifier + length reward + repeat penalty) and pack
them for the loss. The Lightning callbacks (``PartialRollout``, ``WeightSync``, ``HeldoutEval``) are thin
adapters that hold this worker; none of them holds another.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from kimi_rl.config import ModelConfig, RolloutConfig
from kimi_rl.rewards.scoring import score_groups
from kimi_rl.rl.schedule import IterationSettings
from kimi_rl.rollout.buffer import RolloutBuffer, release_stats
from kimi_rl.rollout.packing import RolloutBatch, pack_groups
from kimi_rl.rollout.repetition import RepeatDetector
from kimi_rl.rollout.types import Engine, Group
from kimi_rl.tasks.base import Problem
from kimi_rl.eval.evaluate import evaluate
from kimi_rl.eval.metrics import quantile
from kimi_rl.models.modeling import eos_ids, load_tokenizer, save_tokenizer
from kimi_rl.models.vision import is_vision_folder, load_processor, row_pixels
from kimi_rl.tasks.vision import problem_images
from kimi_rl.rollout import build_engine


class PromptSource(Protocol):
    """Where the worker's prompts come from (``kimi_rl.rl.datamodule.PromptDataModule``)."""

    sampler: Any

    def draw(self, n: int, iteration: int) -> list[Problem]: ...

    def prompt_ids(self, problems: Sequence[Problem]) -> list[list[int]]: ...

    def update_success(self, problems: Sequence[Problem], success: Sequence[float]) -> None: ...


@dataclass
class Rollouts:
    """One iteration's rollouts on this rank: what the loss trains on and what was logged about it."""

    batch: RolloutBatch | None
    """The released groups packed as tensors (on the CPU), None when no group finished."""
    groups: list[Group]
    """The released groups, scored (``reward`` and ``correct`` set on every trajectory)."""
    problems: list[Problem]
    """The problems drawn in this iteration (new groups; released groups may be older)."""
    metrics: dict[str, float] = field(default_factory=dict)


class RolloutWorker:
    """Owns the colocated engine and everything a rollout needs; ``open`` it before use, ``close`` after."""

    def __init__(self, cfg: RolloutConfig, model_cfg: ModelConfig, model_dir: Path, verifier, seed: int,
                 max_model_len: int, repeat_penalty: float = 0.0, logprobs_every: int = 1) -> None:
        self.cfg, self.model_cfg, self.model_dir = cfg, model_cfg, Path(model_dir)
        self.logprobs_every = logprobs_every
        """The engine's sampling-time log-probs are asked for in iteration 0 and every this many after: 1 (every
        iteration) when the loss reads them (``algo.recompute_logp_old`` false), else
        ``rollout.engine_logprobs_every`` (``kimi_rl.pipeline.engine_logprobs_every``)."""
        self.verifier, self.seed, self.max_model_len, self.repeat_penalty = verifier, seed, max_model_len, repeat_penalty
        self.buffer = RolloutBuffer()
        self.repeat = RepeatDetector(cfg.repeat_ngram, cfg.repeat_count, cfg.repeat_window) \
            if cfg.repeat_ngram > 0 else None
        self.engine: Engine | None = None
        self.tokenizer = None
        self.processor = None
        """A vision-language policy's processor: the batch's images become pixel tensors for the trainer."""
        self.eos_ids: list[int] = []

    # -- lifecycle -------------------------------------------------------------------------
    def open(self, rank: int = 0, device: str | None = None, model_config=None) -> None:
        """Load the tokenizer and start the engine on this rank's device (seed + rank); no-op when open."""
        if self.engine is not None:
            return
        self.tokenizer = load_tokenizer(self.model_dir)
        self.eos_ids = eos_ids(self.tokenizer, model_config)
        self.processor = load_processor(self.model_dir) if is_vision_folder(self.model_dir) else None
        self.engine = build_engine(self.cfg, self.model_dir, self.model_cfg, self.seed + rank, self.max_model_len,
                                   device=device)

    def close(self) -> None:
        """Close the engine (its memory, the process group it made); ``open`` starts a new one."""
        if self.engine is not None:
            self.engine.close()
        self.engine = None

    # -- one iteration ---------------------------------------------------------------------
    def new_prompt_count(self) -> int:
        """Prompts to draw so that buffered + new trajectories fill one iteration's capacity."""
        k = self.cfg.samples_per_prompt
        unfinished = len(self.buffer.pending())
        return max(0, (self.cfg.prompts_per_iteration * k - unfinished) // k)

    def collect(self, settings: IterationSettings, source: PromptSource) -> Rollouts:
        """Iteration ``settings.iteration``'s rollouts: draw, generate one segment, score and pack what finished.

        The engine is woken for the generation and put back to sleep after it (training follows)."""
        t0 = time.perf_counter()
        iteration, cfg = settings.iteration, self.cfg
        problems = source.draw(self.new_prompt_count(), iteration)
        self.buffer.add_groups(problems, source.prompt_ids(problems), cfg.samples_per_prompt, iteration)
        self.engine.wake_up()
        applied = self.buffer.generate(self.engine, iteration, settings.segment_tokens, settings.max_response_tokens,
                                       cfg.temperature, cfg.top_p, self.eos_ids, self.repeat,
                                       logprobs=iteration % self.logprobs_every == 0)
        self.engine.sleep()
        t_gen = time.perf_counter() - t0
        groups = self.buffer.pop_finished_groups()
        scores = score_groups(groups, self.verifier, self.tokenizer, settings.len_reward_weight, self.repeat_penalty)
        source.update_success([g.problem for g in groups], scores.group_success)
        batch = pack_groups(groups, self.tokenizer.pad_token_id, iteration, cfg.loss_on_old_segments) \
            if groups else None
        if batch is not None and self.processor is not None:
            rows = [imgs for g in groups for imgs in [problem_images(g.problem)] * len(g.trajectories)]
            batch = dataclasses.replace(batch, **row_pixels(rows, self.processor))
        out = Rollouts(batch, groups, problems)
        out.metrics = self._metrics(out, scores, applied.new_tokens, source, t_gen, time.perf_counter() - t0,
                                    iteration)
        return out

    def _metrics(self, out: Rollouts, scores, new_tokens: int, source: PromptSource, t_gen: float, t_all: float,
                 iteration: int) -> dict[str, float]:
        groups, problems = out.groups, out.problems
        m: dict[str, float] = {
            "time/rollout_s": t_gen,
            "time/score_s": t_all - t_gen,
            "throughput/rollout_tokens_per_s": new_tokens / max(t_gen, 1e-9),
            "rollout/new_tokens": float(new_tokens),
            "rollout/new_prompts": float(len(problems)),
            "rollout/released_groups": float(len(groups)),
            "reward/verifier_errors": float(scores.verifier_errors),
        }
        if problems:
            m["data/sampled_difficulty_mean"] = sum(p.difficulty for p in problems) / len(problems)
            for level in sorted(set(source.sampler.difficulties)):  # every level, so ranks average like shares
                m[f"data/sampled_level_{level}_frac"] = sum(p.difficulty == level for p in problems) / len(problems)
        pop_stats = getattr(self.verifier, "pop_stats", None)  # e.g. a reward model's unparseable verdicts
        if pop_stats is not None:
            m.update({f"reward/verifier_{k}": float(v) for k, v in pop_stats().items()})
        m.update({f"rollout/{k}": v for k, v in self.buffer.stats(iteration).items()})
        m.update({f"data/{k}": float(v) for k, v in source.sampler.stats().items()})
        if groups:
            lengths = sorted(len(t.response_ids) for g in groups for t in g.trajectories)
            rewards = [t.reward for g in groups for t in g.trajectories]
            m.update({
                "reward/mean": sum(rewards) / len(rewards),
                "reward/accuracy": scores.correct / max(scores.samples, 1),
                "reward/all_correct_group_frac": scores.all_correct_groups / len(groups),
                "reward/all_wrong_group_frac": scores.all_wrong_groups / len(groups),
                "response/length_mean": sum(lengths) / len(lengths),
                "response/length_p50": quantile(lengths, 0.5),
                "response/length_p95": quantile(lengths, 0.95),
                "response/length_max": float(lengths[-1]),
            })
            m.update({f"rollout/{k}": v for k, v in release_stats(groups).items()})
        return m

    # -- weights and evaluation ------------------------------------------------------------
    def load_weights(self, state: dict, model=None, mode: str = "inplace") -> None:
        """The trained policy's full state dict into the engine: in place, or (``rebuild``) through a saved
        HF folder of ``model`` and a restarted engine. The engine stays awake: a rollout or an evaluation
        uses it next, and a level-2 sleep would discard the weights just loaded."""
        self.engine.wake_up()
        if mode == "inplace":
            self.engine.load_weights(state)
            return
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="kimi_rl_sync_"))
        model.save_pretrained(str(folder), state_dict=state)
        save_tokenizer(self.tokenizer, folder)
        self.engine.rebuild(folder)

    def evaluate(self, problems: Sequence[Problem], prompts: list[list[int]], samples: int | Sequence[int],
                 temperature: float, max_tokens: int, verifier=None):
        """This rank's held-out ``EvalResult`` with the rollout engine and ``verifier`` (None: the reward's) (no
        sleep after it: a rollout follows before any training)."""
        self.engine.wake_up()
        return evaluate(self.engine, self.tokenizer, problems, prompts, verifier or self.verifier, samples,
                        temperature, max_tokens)

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This rank's buffer and engine sample stream."""
        local = {"buffer": self.buffer.state_dict()}
        sampling = getattr(self.engine, "sampling_state", None)
        if sampling is not None:
            local["engine"] = sampling()
        return local

    def load_state_dict(self, local: dict[str, Any]) -> None:
        self.buffer.load_state_dict(local["buffer"])
        engine_state = local.get("engine")
        if engine_state is not None and self.engine is not None and hasattr(self.engine, "load_sampling_state"):
            self.engine.load_sampling_state(engine_state)
