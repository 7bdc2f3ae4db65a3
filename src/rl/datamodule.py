"""The RL LightningDataModule: serves prompts drawn by the configured sampler (paper 2.3.4).

Batches are only tickets (``kimi_rl.rl.iteration.Iteration``, empty); prompts are drawn when the
iteration starts, after the previous iteration's success rates are in, so resume is exact (the
reason is in ``kimi_rl.rl.iteration``).
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from kimi_rl.config import DataConfig
from kimi_rl.distributed import gather_rank_states, pick_rank_state
from kimi_rl.data.prompts import encode_prompts
from kimi_rl.rl.iteration import Iteration
from kimi_rl.rl.sampling import SAMPLERS, merge_success_across_ranks
from kimi_rl.tasks import TaskData
from kimi_rl.tasks.base import Problem


class Tickets(IterableDataset):
    """An endless stream of empty ``Iteration`` objects; the RL module counts iterations itself."""

    def __iter__(self) -> Iterator[Iteration]:
        i = 0
        while True:
            yield Iteration(ticket=i)
            i += 1


class PromptDataModule(L.LightningDataModule):
    def __init__(self, task: TaskData, tokenizer, data: DataConfig, seed: int) -> None:
        super().__init__()
        self.task, self.tokenizer, self.data_cfg, self.seed = task, tokenizer, data, seed
        self.index = {p.uid: i for i, p in enumerate(task.train)}
        self._prompt_cache: dict[str, list[int]] = {}
        self.sampler = None
        self._pending_state: dict | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.sampler is None:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            difficulties = [p.difficulty for p in self.task.train]
            self.sampler = SAMPLERS.get(self.data_cfg.sampler)(difficulties, self.data_cfg, self.seed + rank)
            if self._pending_state is not None:
                self.sampler.load_state_dict(self._pending_state)
                self._pending_state = None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Tickets(), batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        """One batch per validation run: the held-out evaluation itself is the ``HeldoutEval`` callback's
        (the engine generates, the module only triggers it from ``validation_step``)."""
        return DataLoader([0], batch_size=None, num_workers=0)

    def draw(self, n: int, iteration: int) -> list[Problem]:
        """``n`` problems for this rank's iteration ``iteration``."""
        if n <= 0:
            return []
        return [self.task.train[i] for i in self.sampler.draw(n, iteration)]

    def prompt_ids(self, problems: Sequence[Problem]) -> list[list[int]]:
        missing = [p for p in problems if p.uid not in self._prompt_cache]
        for p, ids in zip(missing, encode_prompts(missing, self.tokenizer, self.data_cfg)):
            self._prompt_cache[p.uid] = ids
        return [self._prompt_cache[p.uid] for p in problems]

    def update_success(self, problems: Sequence[Problem], success: Sequence[float]) -> None:
        """Feed each finished group's success rate to the sampler; merge across ranks."""
        self.sampler.update([self.index[p.uid] for p in problems], list(success))
        merge_success_across_ranks(self.sampler)

    def state_dict(self) -> dict[str, Any]:
        """Every rank's sampler state keyed by rank (success rates agree; RNG streams differ)."""
        return {"sampler_ranks": gather_rank_states(self.sampler.state_dict())} if self.sampler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "sampler_ranks" in state:
            pick_rank_state(state["sampler_ranks"], self._load_sampler)

    def _load_sampler(self, sampler_state: dict) -> None:
        if self.sampler is None:
            self._pending_state = sampler_state
        else:
            self.sampler.load_state_dict(sampler_state)
