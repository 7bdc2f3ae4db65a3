"""Long2short (k1.5 section 2.4): model merging, shortest rejection sampling, DPO pairs and loss.

Departs from the paper: the merge weight is configurable (paper: plain average, 0.5);
"longer" means strictly more tokens and "at least 1.5x" means ``>=`` (checked exactly).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kimi_rl.tasks.base import Problem
from kimi_rl.models.modeling import load_tokenizer, model_class, shifted_token_logprobs, save_tokenizer

MERGE_CONFIG_KEYS = ("architectures", "model_type", "tie_word_embeddings")


# ---------------------------------------------------------------- model merging


def _first_mismatch(a: dict[str, Tensor], b: dict[str, Tensor]) -> Optional[str]:
    """Describe the first (sorted key order) tensor whose presence, shape or dtype differs."""
    for key in sorted(set(a) | set(b)):
        if key not in b:
            return f"tensor '{key}' is in the first state dict but not in the second"
        if key not in a:
            return f"tensor '{key}' is in the second state dict but not in the first"
        ta, tb = a[key], b[key]
        if ta.shape != tb.shape:
            return (f"tensor '{key}' has shape {tuple(ta.shape)} in the first "
                    f"and {tuple(tb.shape)} in the second")
        if ta.dtype != tb.dtype:
            return f"tensor '{key}' has dtype {ta.dtype} in the first and {tb.dtype} in the second"
    return None


def merge_state_dicts(a: dict[str, Tensor], b: dict[str, Tensor], weight: float = 0.5) -> dict[str, Tensor]:
    """Weight averaging of two models: ``theta = weight * theta_a + (1 - weight) * theta_b``.

    Computed in float64 and cast back to each tensor's dtype (both inputs must share it), so
    the result is the float64 average rounded once. Non-float tensors (integer buffers) must
    be equal and are copied from ``a``. Raises ValueError naming the first mismatching tensor.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"merge weight must be in [0, 1], got {weight}")
    problem = _first_mismatch(a, b)
    if problem is not None:
        raise ValueError(f"cannot merge models: {problem}")
    out: dict[str, Tensor] = {}
    for key in sorted(a):
        ta, tb = a[key].detach(), b[key].detach()
        if not ta.is_floating_point():
            if not torch.equal(ta, tb):
                raise ValueError(f"cannot merge models: non-float tensor '{key}' differs between the two")
            out[key] = ta.clone()
            continue
        mixed = weight * ta.double() + (1.0 - weight) * tb.to(ta.device).double()  # same shape as ta
        out[key] = mixed.to(ta.dtype)
    return out


def _check_configs(long_cfg, short_cfg, long_dir: Path, short_dir: Path) -> None:
    for key in MERGE_CONFIG_KEYS:
        va, vb = getattr(long_cfg, key, None), getattr(short_cfg, key, None)
        if va != vb:
            raise ValueError(f"cannot merge '{long_dir}' and '{short_dir}': config.{key} is {va!r} vs {vb!r}")


def merge_models(long_dir: str | Path, short_dir: str | Path, out_dir: str | Path,
                 weight: float = 0.5) -> Path:
    """Average a long-CoT and a short-CoT HF model folder (``weight`` on the long one) into ``out_dir``.

    Configs must agree on architectures, model_type and tie_word_embeddings. The full state
    dicts are merged (lm_head included, also for tied models); the tokenizer comes from
    ``long_dir`` (with a vision model's processor config). Weights keep the long model's stored dtype.
    """
    from transformers import AutoConfig

    long_dir, short_dir, out_dir = Path(long_dir), Path(short_dir), Path(out_dir)
    _check_configs(AutoConfig.from_pretrained(str(long_dir)), AutoConfig.from_pretrained(str(short_dir)),
                   long_dir, short_dir)
    long_model = model_class(long_dir).from_pretrained(str(long_dir), dtype="auto")
    short_model = model_class(short_dir).from_pretrained(str(short_dir), dtype="auto")
    merged = merge_state_dicts(long_model.state_dict(), short_model.state_dict(), weight)
    long_model.load_state_dict(merged, strict=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    long_model.save_pretrained(str(out_dir))
    save_tokenizer(load_tokenizer(long_dir), out_dir)
    return out_dir


# ---------------------------------------------------------------- shortest rejection sampling


@dataclass(frozen=True)
class Sample:
    """One sampled response to a problem, already scored."""

    response: str
    num_tokens: int
    """Response length in tokens (what "shortest" and "1.5x longer" compare)."""
    correct: bool


@dataclass
class SRSResult:
    rows: list[dict]
    """SFT rows ``{"uid", "question", "response"}``, one per problem with a correct sample."""
    skipped_no_correct: int
    """Problems dropped because none of their samples was correct."""


def shortest_correct(samples: Sequence[Sample]) -> Optional[Sample]:
    """The correct sample with the fewest tokens (first one on ties); None if none is correct."""
    correct = [s for s in samples if s.correct]
    return min(correct, key=lambda s: s.num_tokens) if correct else None  # min keeps the first tie


def _check_aligned(problems: Sequence[Problem], samples_per_problem: Sequence[Sequence[Sample]]) -> None:
    if len(problems) != len(samples_per_problem):
        raise ValueError(f"{len(problems)} problems but {len(samples_per_problem)} sample lists")


def shortest_rejection_sampling(problems: Sequence[Problem],
                                samples_per_problem: Sequence[Sequence[Sample]]) -> SRSResult:
    """Shortest rejection sampling: keep each problem's shortest correct response as SFT data.

    The paper samples n = 8 responses per problem; any n works here. A problem without a
    correct sample yields no row and is counted in ``skipped_no_correct``.
    """
    _check_aligned(problems, samples_per_problem)
    rows, skipped = [], 0
    for problem, samples in zip(problems, samples_per_problem):
        best = shortest_correct(samples)
        if best is None:
            skipped += 1
            continue
        rows.append({"uid": problem.uid, "question": problem.question, "response": best.response})
    return SRSResult(rows=rows, skipped_no_correct=skipped)


# ---------------------------------------------------------------- DPO


@dataclass(frozen=True)
class Pair:
    chosen: Sample
    rejected: Sample


def dpo_pairs(samples: Sequence[Sample], ratio: float = 1.5) -> list[Pair]:
    """Preference pairs of one problem (paper 2.4, DPO).

    chosen = the shortest correct sample (first on ties). rejected, in sample order:
    every wrong sample with ``num_tokens > chosen.num_tokens``, and every correct sample with
    ``num_tokens >= ratio * chosen.num_tokens`` (exactly 1.5x counts; compared in exact
    rational arithmetic on the decimal value of ``ratio``). No correct sample: no pairs.
    """
    if ratio <= 1.0:
        raise ValueError(f"dpo ratio must be > 1 (the chosen sample would reject itself), got {ratio}")
    chosen = shortest_correct(samples)
    if chosen is None:
        return []
    # exact rational compare: in floats 1.1 * 50 is 55.00000000000001 and 55 would not count
    threshold = Fraction(str(float(ratio))) * chosen.num_tokens

    def rejected(s: Sample) -> bool:
        return s.num_tokens >= threshold if s.correct else s.num_tokens > chosen.num_tokens

    return [Pair(chosen, s) for s in samples if s is not chosen and rejected(s)]


@dataclass
class DPORowsResult:
    rows: list[dict]
    """DPO rows ``{"uid", "question", "chosen", "rejected"}`` (response texts)."""
    skipped_no_pairs: int
    """Problems that gave no pair (no correct sample, or nothing long enough to reject)."""


def dpo_rows(problems: Sequence[Problem], samples_per_problem: Sequence[Sequence[Sample]],
             ratio: float = 1.5) -> DPORowsResult:
    """The DPO data set: ``dpo_pairs`` of every problem, with the problem's uid and question."""
    _check_aligned(problems, samples_per_problem)
    rows, skipped = [], 0
    for problem, samples in zip(problems, samples_per_problem):
        pairs = dpo_pairs(samples, ratio)
        skipped += int(not pairs)
        rows += [{"uid": problem.uid, "question": problem.question,
                  "chosen": p.chosen.response, "rejected": p.rejected.response} for p in pairs]
    return DPORowsResult(rows=rows, skipped_no_pairs=skipped)


@dataclass
class DPOOutput:
    loss: Tensor
    """Scalar: mean over pairs."""
    rewards_chosen: Tensor
    """[P] beta * (pc - rc), detached."""
    rewards_rejected: Tensor
    """[P] beta * (pr - rr), detached."""
    accuracy: Tensor
    """Scalar: share of pairs with rewards_chosen > rewards_rejected."""


def dpo_loss(policy_chosen_logp: Tensor, policy_rejected_logp: Tensor, ref_chosen_logp: Tensor,
             ref_rejected_logp: Tensor, beta: float) -> DPOOutput:
    """DPO loss over P pairs, inputs the summed response log-probs [P]:

        loss = mean_p  -log sigmoid( beta * ((pc - rc) - (pr - rr)) )

    with pc/pr the policy's log-probs of chosen/rejected and rc/rr the reference model's.
    """
    inputs = (policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp)
    shapes = {tuple(t.shape) for t in inputs}
    if len(shapes) != 1 or policy_chosen_logp.dim() != 1:
        raise ValueError(f"dpo_loss inputs must all be [P]; got shapes {sorted(shapes)}")
    chosen = beta * (policy_chosen_logp - ref_chosen_logp.detach())  # [P]
    rejected = beta * (policy_rejected_logp - ref_rejected_logp.detach())  # [P]
    loss = -F.logsigmoid(chosen - rejected).mean()
    rc, rr = chosen.detach(), rejected.detach()  # [P], [P]
    return DPOOutput(loss=loss, rewards_chosen=rc, rewards_rejected=rr, accuracy=(rc > rr).float().mean())


def sequence_logps(model, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, **images: Tensor) -> Tensor:
    """Summed log-probs of the ``loss_mask`` tokens: ``sum_{t>=1} m_t * log p(x_t | x_<t)``.

    input_ids, attention_mask, loss_mask: [B, T], loss_mask aligned with input_ids (1 on
    response tokens; position 0 has no prediction and is ignored). Returns [B] in float32.
    Wrap the call in ``torch.no_grad()`` for the reference model. ``images``: a vision model's ``pixel_values``
    [B, I, 3, H, W] and ``pixel_attention_mask`` [B, I, H, W].
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **images).logits  # [B, T, V]
    tok = shifted_token_logprobs(logits, input_ids)  # [B, T-1]
    return (tok * loss_mask[:, 1:].to(tok.dtype)).sum(dim=-1)  # [B]
