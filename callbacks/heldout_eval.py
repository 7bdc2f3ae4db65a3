"""HeldoutEval: held-out accuracy with the rollout worker's engine and verifier before RL, every N iterations
(in Lightning's validation loop: ``trainer_kwargs``; the module's ``validation_step`` does nothing), and after.

Each rank evaluates its share of the problems; counts are summed across ranks (``strategy.reduce``).
"""
from __future__ import annotations

import dataclasses
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from kimi_rl.eval.evaluate import EvalResult, LevelStats, describe_samples, pass_k_values, samples_per_problem
from kimi_rl.rollout.worker import RolloutWorker
from kimi_rl.runs import log


class HeldoutEval(Callback):
    def __init__(self, worker: RolloutWorker, problems, prompts: list[list[int]], samples: int,
                 temperature: float, max_tokens: int, every: int = 0, verifier=None,
                 balance_levels: bool = False) -> None:
        """``verifier``: the verifier of held-out accuracy (None: the worker's reward verifier; see
        ``eval.verifier``); ``balance_levels``: ``eval.balance_levels`` (``samples_per_problem``)."""
        if samples < 1 or max_tokens < 1 or every < 0:
            raise ValueError("HeldoutEval: samples and max_tokens must be >= 1, every >= 0")
        self.worker, self.problems, self.prompts = worker, problems, prompts
        self.samples, self.temperature, self.max_tokens, self.every = samples, temperature, max_tokens, every
        self.n = samples_per_problem(problems, samples, balance_levels)  # the same on every rank
        self.level_n = {p.difficulty: n for p, n in zip(problems, self.n)}
        self.verifier = verifier
        self.results: dict[str, EvalResult] = {}

    def run(self, trainer: L.Trainer, when: str = "") -> EvalResult:
        """Evaluate (each rank its share); rank 0 says so in the run's log before and after (``when``)."""
        rank, world = trainer.global_rank, trainer.world_size
        if trainer.is_global_zero:
            log(f"held-out eval{when}: {describe_samples(self.problems, self.n, self.samples)}, "
                f"T={self.temperature}, up to {self.max_tokens} tokens")
        t0 = time.perf_counter()
        mine = list(range(rank, len(self.problems), world))
        local = self.worker.evaluate([self.problems[i] for i in mine], [self.prompts[i] for i in mine],
                                     [self.n[i] for i in mine], self.temperature, self.max_tokens, self.verifier)
        res = self._reduce(local, trainer)
        if trainer.is_global_zero:
            levels = ", ".join(f"level {lv} {100 * s.accuracy:.1f}%" for lv, s in sorted(res.per_level.items()))
            log(f"held-out eval{when}: pass@1 {100 * res.accuracy:.1f}% ({levels}), mean {res.mean_tokens:.0f} tokens, "
                f"{time.perf_counter() - t0:.0f} s")
        return res

    def _reduce(self, local: EvalResult, trainer: L.Trainer) -> EvalResult:
        """Sum the ranks' counts: per level (problems, correct, tokens), and problems with their pass@k sums."""
        levels = sorted({p.difficulty for p in self.problems})
        ks = pass_k_values(self.samples)
        per = torch.zeros(len(levels), 3, dtype=torch.float64)  # [levels, (problems, correct, tokens)]
        for row, lv in enumerate(levels):
            s = local.per_level.get(lv)
            if s:
                n = s.problems * self.level_n[lv]
                per[row] = torch.tensor([s.problems, s.accuracy * n, s.mean_tokens * n], dtype=torch.float64)
        at_k = torch.tensor([local.problems] + [local.pass_at_k.get(k, 0.0) * local.problems for k in ks],
                            dtype=torch.float64)  # [1 + K]
        flat = torch.cat([per.flatten(), at_k])
        if trainer.world_size > 1:
            flat = trainer.strategy.reduce(flat.to(trainer.strategy.root_device), reduce_op="sum").cpu()
        per, at_k = flat[:per.numel()].view(-1, 3), flat[per.numel():]
        per_level = {}
        for row, lv in enumerate(levels):
            probs, correct, tokens = per[row].tolist()
            n = max(probs * self.level_n[lv], 1)
            per_level[lv] = LevelStats(problems=int(probs), accuracy=correct / n, mean_tokens=tokens / n,
                                       samples=self.level_n[lv])
        # means over problems: a level weighs its problems, not its samples (``EvalResult.accuracy``)
        total = max(sum(s.problems for s in per_level.values()), 1)
        problems = int(at_k[0])
        pass_at_k = {k: float(v) / problems for k, v in zip(ks, at_k[1:])} if problems else {}
        return EvalResult(accuracy=sum(s.problems * s.accuracy for s in per_level.values()) / total,
                          mean_tokens=sum(s.problems * s.mean_tokens for s in per_level.values()) / total,
                          per_level=per_level, samples=self.samples, pass_at_k=pass_at_k, problems=problems)

    def _log(self, trainer: L.Trainer, res: EvalResult, step: int) -> None:
        if trainer.is_global_zero and trainer.logger is not None:
            m = {"eval/accuracy": res.accuracy, "eval/mean_tokens": res.mean_tokens}
            m.update({f"eval/accuracy_level{lv}": s.accuracy for lv, s in res.per_level.items()})
            m.update({f"eval/pass_at_{k}": v for k, v in res.pass_at_k.items()})
            trainer.logger.log_metrics(m, step=step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resumed run restored "before" from its checkpoint; evaluating again would also shift
        # the engine's sample stream away from the uninterrupted run's
        if "before" not in self.results and pl_module.iteration == 0:
            self.results["before"] = self.run(trainer, " before RL")
            self._log(trainer, self.results["before"], pl_module.iteration)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        """Lightning's validation loop runs one batch every ``rl.eval_every`` iterations: evaluate then."""
        self.validate(trainer, pl_module)

    def validate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> EvalResult:
        """One evaluation from Lightning's validation loop, logged at the completed iteration count."""
        res = self.run(trainer, f" at iteration {pl_module.iteration}")
        self._log(trainer, res, pl_module.iteration)
        return res

    @staticmethod
    def trainer_kwargs(every: int) -> dict:
        """Lightning Trainer arguments that run the validation loop every ``every`` iterations (0: never)."""
        if every <= 0:
            return {"limit_val_batches": 0, "num_sanity_val_steps": 0}
        return {"val_check_interval": every, "check_val_every_n_epoch": None, "limit_val_batches": 1,
                "num_sanity_val_steps": 0}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.results["after"] = self.run(trainer, " after RL")
        self._log(trainer, self.results["after"], pl_module.iteration)

    def state_dict(self) -> dict:
        # plain types only: Lightning resumes with torch.load(weights_only=True)
        return {"results": {name: dataclasses.asdict(r) for name, r in self.results.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.results = {name: _result(d) for name, d in state_dict.get("results", {}).items()}


def _result(d: dict) -> EvalResult:
    per_level = {int(k): LevelStats(**v) for k, v in d.get("per_level", {}).items()}
    return EvalResult(**{**d, "per_level": per_level})
