"""Data of the long2short stages (k1.5 section 2.4): n scored samples per problem from a model folder,
JSONL row files, and an SFT stream over fixed (prompt, response) rows.

Not from the paper: responses are stored as text and tokenized again for training (as TRL does);
with the built-in character tokenizer this round-trips exactly.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from kimi_rl.config import Config, DataConfig
from kimi_rl.long2short.methods import Sample
from kimi_rl.tasks.base import Problem
from kimi_rl.data.prompts import build_prompt, encode_prompts
from kimi_rl.models.modeling import load_tokenizer
from kimi_rl.models.vision import row_pixels
from kimi_rl.rewards import VERIFIERS
from kimi_rl.rewards.scoring import sample_and_score
from kimi_rl.rollout import open_engine
from kimi_rl.sft import bucket_batches, collate
from kimi_rl.tasks.vision import problem_images


def sample_scored(model_dir: str | Path, problems: Sequence[Problem], cfg: Config, verifier: str, n: int,
                  temperature: float, max_response_tokens: int) -> list[list[Sample]]:
    """``n`` responses per problem from ``model_dir`` with the ``cfg.rollout`` engine, each verified.

    Prompts are built as in RL and evaluation (``data.prompt_template``); ``num_tokens`` counts the
    sampled tokens (eos included), the unit "shortest" and "1.5x longer" compare. A response cut at
    ``max_response_tokens`` is wrong, as in RL: its final answer was never written.
    """
    if n < 1 or max_response_tokens < 1:
        raise ValueError(f"sample_scored: n ({n}) and max_response_tokens ({max_response_tokens}) must be >= 1")
    if not problems:
        return []
    tok = load_tokenizer(model_dir)
    prompts = encode_prompts(problems, tok, cfg.data)
    max_len = max(len(p) for p in prompts) + max_response_tokens + 8
    with open_engine(cfg.rollout, Path(model_dir), cfg.model, cfg.run.seed, max_len) as engine:
        scored = sample_and_score(engine, tok, problems, prompts, VERIFIERS.get(verifier)(), n, temperature,
                                  max_response_tokens, cfg.rollout.top_p)
    return [[Sample(response=t, num_tokens=n_tok, correct=ok)
             for t, n_tok, ok in zip(s.texts, s.lengths, s.correct(cut_is_wrong=True))] for s in scored]


def write_jsonl(rows: Sequence[dict], path: str | Path) -> Path:
    """One JSON object per line (UTF-8), written to a temp file then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


def response_examples(rows: Sequence[dict], tokenizer, data: DataConfig) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, response_ids + [eos])`` of SFT rows ``{"question", "response"}``, prompts built as
    in RL so the model learns the response to the prompt it is sampled with."""
    eos = tokenizer.eos_token_id
    return [(build_prompt(r["question"], data.prompt_template, tokenizer, data.use_chat_template),
             list(tokenizer(r["response"], add_special_tokens=False)["input_ids"]) + [eos]) for r in rows]


def rows_images(rows: Sequence[dict], problems: Mapping[str, Problem] | None) -> list[list]:
    """Each row's images: those of the problem its ``uid`` names ([] for a text problem)."""
    if problems is None:
        raise ValueError("rows of a vision model need their problems (by uid) for the images")
    missing = [r.get("uid") for r in rows if r.get("uid") not in problems]
    if missing:
        raise ValueError(f"{len(missing)} rows name no known problem (first uid: {missing[0]!r})")
    return [problem_images(problems[r["uid"]]) for r in rows]


class ResponseStream(IterableDataset):
    """Endless length-bucketed SFT batches (``sft.collate``) over fixed examples, reshuffled each epoch; with
    ``images`` (each example's PIL images) and a vision model's ``processor``, each batch gets its rows' pixels."""

    def __init__(self, examples: list[tuple[list[int], list[int]]], pad_id: int, tokens_per_step: int,
                 seed: int, rank: int = 0, world_size: int = 1, images: Sequence[list] | None = None,
                 processor=None) -> None:
        if not examples:
            raise ValueError("ResponseStream: no examples to train on (no problem had a correct sample?)")
        longest = max(len(p) + len(r) for p, r in examples)
        if longest > tokens_per_step:
            raise ValueError(f"ResponseStream: an example has {longest} tokens, over tokens_per_step="
                             f"{tokens_per_step}; raise the token budget")
        self.examples, self.pad_id, self.tokens_per_step = examples, pad_id, tokens_per_step
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.images = images if processor is not None and images is not None and any(images) else None
        self.processor = processor

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        lengths = [len(p) + len(r) for p, r in self.examples]
        epoch = 0
        while True:
            batches = bucket_batches(lengths, self.tokens_per_step, random.Random(f"rows-{self.seed}-{epoch}"))
            for b, idx in enumerate(batches):
                if b % self.world_size == self.rank:
                    batch = collate([self.examples[i] for i in idx], self.pad_id)
                    if self.images is not None:
                        batch.update(row_pixels([self.images[i] for i in idx], self.processor))
                    yield batch
            epoch += 1


class ResponseSFTDataModule(L.LightningDataModule):
    """Feeds ``SFTModule`` from SFT rows instead of generated long-CoT traces (with a vision model's
    ``processor``, each row's images are its problem's: ``problems`` by the row's ``uid``)."""

    def __init__(self, rows: Sequence[dict], tokenizer, data: DataConfig, tokens_per_step: int, seed: int,
                 problems: Mapping[str, Problem] | None = None, processor=None) -> None:
        super().__init__()
        self.examples = response_examples(rows, tokenizer, data)
        self.pad_id, self.tokens_per_step, self.seed = tokenizer.pad_token_id, tokens_per_step, seed
        self.processor = processor
        self.images = rows_images(rows, problems) if processor is not None else None

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        world = self.trainer.world_size if self.trainer else 1
        stream = ResponseStream(self.examples, self.pad_id, self.tokens_per_step, self.seed, rank, world,
                                self.images, self.processor)
        return DataLoader(stream, batch_size=None, num_workers=0)
