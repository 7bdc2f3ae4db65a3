"""Long-CoT SFT warm-up (paper section 2.2): next-token loss on response tokens only.

Batches are bucketed by length under a token budget, so padding stays small without
packing several examples into one attention window.
"""
from __future__ import annotations

import math
import random
import time
from collections import Counter
from typing import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from kimi_rl.config import DataConfig, SFTConfig
from kimi_rl.tasks import vision
from kimi_rl.tasks.arithmetic import make_trace
from kimi_rl.tasks.base import Problem
from kimi_rl.distributed import data_parallel_mesh, shard_model
from kimi_rl.models.modeling import shifted_token_logprobs
from kimi_rl.models.vision import image_inputs, row_pixels


def bucket_batches(lengths: Sequence[int], tokens_per_step: int, rng: random.Random, pool: int = 2048) -> list[list[int]]:
    """Group example indices into batches whose padded size ``len(batch) * max_len``
    stays within ``tokens_per_step``; examples are sorted by length inside pools of
    ``pool`` so neighbours have similar lengths, then batches are shuffled."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        cur: list[int] = []
        for i in chunk:
            longest = max([lengths[j] for j in cur] + [lengths[i]])
            if cur and longest * (len(cur) + 1) > tokens_per_step:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


def traces_per_problem(problems: Sequence[Problem], per_problem: int, min_per_level: int) -> list[int]:
    """Traces per epoch of each problem: ``per_problem``, raised for a difficulty level whose n problems would
    give fewer than ``min_per_level`` traces to ceil(min_per_level / n) (a problem's level: its ``difficulty``).

    E.g. levels [1, 1, 2, 2, 2, 2], per_problem 1, min_per_level 4 -> [2, 2, 1, 1, 1, 1]."""
    counts = Counter(p.difficulty for p in problems)
    return [max(per_problem, math.ceil(min_per_level / counts[p.difficulty])) for p in problems]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``loss_mask`` (1 on response tokens)."""
    width = max(len(p) + len(r) for p, r in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # [B, T]
    attn = torch.zeros((len(examples), width), dtype=torch.long)  # [B, T]
    loss = torch.zeros((len(examples), width), dtype=torch.bool)  # [B, T]
    for row, (p, r) in enumerate(examples):
        n = len(p) + len(r)
        ids[row, :n] = torch.tensor(p + r)
        attn[row, :n] = 1
        loss[row, len(p) : n] = True
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}


class TraceStream(IterableDataset):
    """Endless length-bucketed batches of (prompt, long-CoT trace) pairs; each epoch draws
    fresh traces (new re-checks and corrections) for every training problem."""

    def __init__(self, problems: list[Problem], tokenizer, data: DataConfig, sft: SFTConfig,
                 seed: int, rank: int = 0, world_size: int = 1, processor=None) -> None:
        self.problems, self.tok, self.data, self.sft = problems, tokenizer, data, sft
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.processor = processor
        """A vision-language model's processor: each batch gets its problems' images as pixel tensors."""

    def _examples(self, rng: random.Random) -> tuple[list[tuple[list[int], list[int]]], list[Problem]]:
        """(prompt ids, trace ids + eos) pairs and the problem of each."""
        visual = self.data.source == "vision_arithmetic"
        questions, traces, owners = [], [], []
        repeats = traces_per_problem(self.problems, self.sft.traces_per_problem, self.sft.min_traces_per_level)
        for p, k in zip(self.problems, repeats):
            for _ in range(k):
                questions.append(p.question)
                owners.append(p)
                traces.append(vision.make_trace(p, rng, self.data.max_rechecks, self.data.correction_prob) if visual
                              else make_trace(p.question, rng, self.data.max_rechecks, self.data.correction_prob,
                                         self.data.trace_format))
        prompts = self.tok(questions)["input_ids"]
        layout = getattr(self.tok, "image_layout", None)
        if layout is not None:
            prompts = [layout.expand(p) for p in prompts]
        responses = self.tok(traces, add_special_tokens=False)["input_ids"]
        eos = self.tok.eos_token_id
        return [(p, r + [eos]) for p, r in zip(prompts, responses)], owners

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = 0
        while True:
            rng = random.Random(f"sft-{self.seed}-{epoch}")
            examples, owners = self._examples(rng)
            batches = bucket_batches([len(p) + len(r) for p, r in examples], self.sft.tokens_per_step, rng)
            for b, idx in enumerate(batches):
                if b % self.world_size == self.rank:
                    batch = collate([examples[i] for i in idx], self.tok.pad_token_id)
                    if self.processor is not None:
                        batch.update(row_pixels([vision.problem_images(owners[i]) for i in idx], self.processor))
                    yield batch
            epoch += 1


class SFTDataModule(L.LightningDataModule):
    def __init__(self, problems: list[Problem], tokenizer, data: DataConfig, sft: SFTConfig, seed: int,
                 processor=None) -> None:
        super().__init__()
        self.problems, self.tok, self.data_cfg, self.sft, self.seed = problems, tokenizer, data, sft, seed
        self.processor = processor

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        stream = TraceStream(self.problems, self.tok, self.data_cfg, self.sft, self.seed, rank, world, self.processor)
        return DataLoader(stream, batch_size=None, num_workers=0)


def response_nll(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the masked tokens: -(1/|M|) sum_{t in M} log p(x_t | x_<t)."""
    tok = shifted_token_logprobs(logits, input_ids)  # [B, T-1]
    mask = loss_mask[:, 1:].float()  # [B, T-1]
    return -(tok * mask).sum() / mask.sum().clamp(min=1.0)


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class SFTModule(L.LightningModule):
    """Causal-LM fine-tuning on long-CoT traces; the model is a transformers model."""

    def __init__(self, model, sft: SFTConfig) -> None:
        super().__init__()
        self.model = model.train()
        self.sft = sft
        self._t0 = time.perf_counter()

    def configure_model(self) -> None:
        mesh = data_parallel_mesh(self)
        if mesh is not None and not getattr(self, "_sharded", False):
            shard_model(self.model, mesh)
            self._sharded = True

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **image_inputs(batch))
        loss = response_nll(out.logits, batch["input_ids"], batch["loss_mask"])
        tokens = int(batch["attention_mask"].sum())
        now = time.perf_counter()
        self.log("sft/loss", loss, prog_bar=True)
        self.log("sft/lr", self.optimizers().param_groups[0]["lr"])
        self.log("sft/tokens_per_s", tokens / max(now - self._t0, 1e-6))
        self._t0 = now
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.sft.lr, weight_decay=self.sft.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, self.sft.warmup_steps, self.sft.max_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
