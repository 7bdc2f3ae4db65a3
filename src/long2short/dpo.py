"""DPO for long2short (k1.5 section 2.4): prefer each problem's shortest correct response over longer ones.

Departs from the paper, which gives no training details: the reference is the starting model, its
log-probs computed once before training (no second model in memory); AdamW at a constant rate.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from kimi_rl.config import Config, DataConfig
from kimi_rl.long2short.methods import dpo_loss, sequence_logps
from kimi_rl.sft import collate
from kimi_rl.data.prompts import build_prompt
from kimi_rl.long2short.data import rows_images
from kimi_rl.models.modeling import load_model, load_tokenizer
from kimi_rl.models.vision import image_inputs, is_vision_folder, load_processor, row_pixels
from kimi_rl.tasks.base import Problem
from kimi_rl.pipeline import log
from kimi_rl.rollout.weights import save_policy
from kimi_rl.trainer_factory import build_trainer, set_threads


@dataclass(frozen=True)
class DPOExample:
    """One preference pair as token ids, with the reference model's summed response log-probs."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    """Chosen response tokens, eos appended."""
    rejected_ids: list[int]
    ref_chosen_logp: float = 0.0
    ref_rejected_logp: float = 0.0
    images: tuple = ()
    """The problem's PIL images (a vision-language model), shared by both responses."""


def pair_examples(rows: Sequence[dict], tokenizer, data: DataConfig,
                  images: Sequence[list] | None = None) -> list[DPOExample]:
    """DPO rows ``{"question", "chosen", "rejected"}`` as token ids (prompt built as in RL, eos appended);
    ``images``: each row's PIL images (a vision-language model)."""
    eos = tokenizer.eos_token_id

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [eos]

    return [DPOExample(build_prompt(r["question"], data.prompt_template, tokenizer, data.use_chat_template),
                       ids(r["chosen"]), ids(r["rejected"]), images=tuple(images[i]) if images else ())
            for i, r in enumerate(rows)]


def collate_pairs(examples: Sequence[DPOExample], pad_id: int, processor=None) -> dict[str, torch.Tensor]:
    """P pairs as one batch of 2P sequences, the P chosen first (``sft.collate``: input_ids,
    attention_mask, loss_mask ``[2P, T]``), plus ``ref_chosen_logp`` / ``ref_rejected_logp`` ``[P]``; with a
    vision model's ``processor`` and images, ``pixel_values`` / ``pixel_attention_mask`` of the 2P rows."""
    batch = collate([(e.prompt_ids, e.chosen_ids) for e in examples]
                    + [(e.prompt_ids, e.rejected_ids) for e in examples], pad_id)
    if processor is not None and any(e.images for e in examples):
        batch.update(row_pixels([list(e.images) for e in examples] * 2, processor))
    batch["ref_chosen_logp"] = torch.tensor([e.ref_chosen_logp for e in examples], dtype=torch.float32)  # [P]
    batch["ref_rejected_logp"] = torch.tensor([e.ref_rejected_logp for e in examples], dtype=torch.float32)  # [P]
    return batch


@torch.no_grad()
def with_reference_logps(model, examples: Sequence[DPOExample], pad_id: int,
                         pairs_per_batch: int = 16, processor=None) -> list[DPOExample]:
    """The examples with ``model``'s summed log-probs of chosen and rejected responses filled in,
    computed once before training: the reference model need not stay in memory."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[DPOExample] = []
    for start in range(0, len(examples), pairs_per_batch):
        chunk = examples[start: start + pairs_per_batch]
        b = {k: v.to(device) for k, v in collate_pairs(chunk, pad_id, processor).items()}
        logps = sequence_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"],
                               **image_inputs(b)).cpu()  # [2P]
        p = len(chunk)
        out += [dataclasses.replace(e, ref_chosen_logp=float(logps[i]), ref_rejected_logp=float(logps[p + i]))
                for i, e in enumerate(chunk)]
    model.train(was_training)
    return out


class DPODataModule(L.LightningDataModule):
    """Shuffled batches of ``pairs_per_step`` pairs (examples must carry reference log-probs)."""

    def __init__(self, examples: Sequence[DPOExample], pad_id: int, pairs_per_step: int, seed: int,
                 processor=None) -> None:
        super().__init__()
        if not examples:
            raise ValueError("DPODataModule: no preference pairs (no problem had a correct and a longer sample)")
        if pairs_per_step < 1:
            raise ValueError(f"DPODataModule: pairs_per_step must be >= 1, got {pairs_per_step}")
        self.examples, self.pad_id, self.pairs_per_step, self.seed = list(examples), pad_id, pairs_per_step, seed
        self.processor = processor

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.examples, batch_size=self.pairs_per_step, shuffle=True, num_workers=0,
                          collate_fn=partial(collate_pairs, pad_id=self.pad_id, processor=self.processor),
                          generator=torch.Generator().manual_seed(self.seed))


class DPOModule(L.LightningModule):
    """The policy (a transformers causal LM) trained with ``long2short.dpo_loss``; no reference model kept."""

    def __init__(self, model, beta: float = 0.1, lr: float = 1e-4, weight_decay: float = 0.0) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"DPOModule: beta must be > 0, got {beta}")
        if not lr > 0:
            raise ValueError(f"DPOModule: lr must be > 0, got {lr}")
        self.model = model.train()
        self.beta, self.lr, self.weight_decay = beta, lr, weight_decay

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        p = batch["ref_chosen_logp"].shape[0]
        logps = sequence_logps(self.model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                               **image_inputs(batch))  # [2P]
        out = dpo_loss(logps[:p], logps[p:], batch["ref_chosen_logp"], batch["ref_rejected_logp"], self.beta)
        self.log_dict({
            "dpo/loss": out.loss.detach(),
            "dpo/accuracy": out.accuracy,
            "dpo/margin": (out.rewards_chosen - out.rewards_rejected).mean(),
            "dpo/rewards_chosen": out.rewards_chosen.mean(),
            "dpo/rewards_rejected": out.rewards_rejected.mean(),
            "dpo/logp_chosen": logps[:p].detach().mean(),
            "dpo/logp_rejected": logps[p:].detach().mean(),
        }, batch_size=p, prog_bar=False)
        return out.loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def run_dpo(init_dir: str | Path, rows: Sequence[dict], out_dir: str | Path, cfg: Config, log_root: str | Path,
            beta: float = 0.1, lr: float = 1e-4, steps: int = 40, pairs_per_step: int = 8,
            problems: Mapping[str, Problem] | None = None) -> Path:
    """DPO-train the model in ``init_dir`` (also the reference) on ``rows`` for ``steps`` optimizer steps;
    writes the HF folder ``out_dir`` and TensorBoard scalars ``dpo/*`` under ``log_root/tb/dpo``. A vision model
    sees each row's images: its problem's, from ``problems`` by the row's ``uid``."""
    set_threads(cfg.trainer)
    L.seed_everything(cfg.run.seed, verbose=False)
    tok = load_tokenizer(init_dir)
    model = load_model(init_dir, cfg.model.dtype)
    processor = load_processor(init_dir) if is_vision_folder(init_dir) else None
    images = rows_images(rows, problems) if processor is not None else None
    examples = with_reference_logps(model, pair_examples(rows, tok, cfg.data, images), tok.pad_token_id,
                                    processor=processor)
    module = DPOModule(model, beta, lr)
    trainer = build_trainer(cfg.trainer, Path(log_root), "dpo", steps, [], log_every_n_steps=1,
                            enable_progress_bar=False)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=DPODataModule(examples, tok.pad_token_id, pairs_per_step, cfg.run.seed, processor))
    save_policy(module.model, tok, Path(out_dir), trainer.is_global_zero)
    trainer.strategy.barrier()
    log(f"DPO: {trainer.global_step} steps on {len(examples)} pairs in {time.perf_counter() - t0:.0f} s "
        f"-> {out_dir}")
    return Path(out_dir)
