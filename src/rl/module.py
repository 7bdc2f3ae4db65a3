"""The RL LightningModule: k1.5 policy optimization on the rollouts of one ``Iteration``.

It holds the policy, owns the iteration count and runs the update; the math lives in ``losses``,
the rollouts come from ``RolloutWorker.collect`` through the ``PartialRollout`` callback (see
``kimi_rl.rl.iteration`` for the order of one iteration). Manual optimization: an iteration may
take several optimizer steps, and the optimizer state is reset at its start (paper 2.3.2).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import lightning as L
import torch

from kimi_rl.config import AlgoConfig, ConfigError
from kimi_rl.distributed import (data_parallel_mesh, gather_rank_states, is_distributed, max_across_ranks,
                                 pick_rank_state, shard_model)
from kimi_rl.rl.losses import LOSSES, informative_rows
from kimi_rl.models.modeling import shifted_token_logprobs
from kimi_rl.registries import OPTIMIZERS
from kimi_rl.rl.optim import reset_optimizer_state
from kimi_rl.rl.iteration import Iteration
from kimi_rl.rng import capture_rng, restore_rng  # noqa: F401  (kimi_rl.rl.module.capture_rng, as before)
from kimi_rl.rollout.packing import RolloutBatch, group_minibatches, minibatches, pack_rows, packed_layout


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   pack_lengths: list[int] | None = None, keep: torch.Tensor | None = None,
                   images: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """log pi(x_t | x_<t) for every position t >= 1 (0 at t = 0), aligned with ``input_ids`` [B, T].

    ``pack_lengths`` (row i is ``input_ids[i, :pack_lengths[i]]``, right padding): the rows are first packed end
    to end (``pack_rows``) into as few rows of the longest row's width as hold them, with position ids restarting
    at 0 for each, and the model runs with no attention mask; transformers then restricts attention to each
    packed sequence (block-diagonal causal), so a row sees exactly its own prefix, as in the padded layout, for
    the cost of its own tokens instead of B x T. The result is gathered back to [B, T] (0 on padding); no
    attention pair is added, so no row costs more. The layout is built on the CPU from the given lengths (no
    device sync) and moved once.

    ``keep`` [B, T] (bool): only these tokens' log-probs are wanted (the trained response tokens; 0 elsewhere).
    The output layer (``get_output_embeddings``) and the log-softmax then see only the hidden states that predict
    them: on a 49k vocabulary the head is a fifth of a small model's forward FLOPs and its [tokens, V] logits its
    largest activation, and the prompt's share of both is never trained. A forward pre-hook narrows the head's
    input, so the model's own forward (FSDP's unsharding, any logit scaling after the head, which is
    elementwise) runs unchanged.

    ``images`` (a vision-language policy): ``pixel_values`` [B, I, 3, H, W] and ``pixel_attention_mask``
    [B, I, H, W], row i's images in the order of its ``<image>`` blocks (all-zero images pad a row with fewer;
    the model drops them). The model fills the image blocks of the flattened batch in order, so the images go in
    the order their rows take in the packed (or padded) layout."""
    bins = pack_rows(pack_lengths, max(pack_lengths)) if pack_lengths else []
    packed = len(bins) not in (0, len(pack_lengths or []))  # else not asked, or nothing shares a row
    device = input_ids.device
    if packed:
        source, positions, where, valid = packed_layout(pack_lengths, bins, input_ids.shape[1])  # on the CPU
        model_ids = input_ids.flatten()[source.to(device)]  # [P, W]
        inputs = {"input_ids": model_ids, "position_ids": positions.to(device), "use_cache": False}
    else:
        model_ids = input_ids  # [B, T]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if images is not None:
        order = torch.tensor([i for rows in bins for i in rows] if packed else range(input_ids.shape[0]))
        for name, value in images.items():  # [B, I, ...] -> [1, B * I, ...] in layout order
            inputs[name] = value[order.to(value.device)].flatten(0, 1).unsqueeze(0)
    head = model.get_output_embeddings() if keep is not None else None
    if head is None:
        logits = model(**inputs).logits  # [P, W, V] or [B, T, V]
        logp = torch.nn.functional.pad(shifted_token_logprobs(logits, model_ids), (1, 0))
        return logp.flatten()[where.to(device)] * valid.to(device) if packed else logp
    keep = keep.cpu().bool() & (torch.arange(input_ids.shape[1]) >= 1)  # [B, T]; indices on the CPU (no device sync)
    if packed:
        keep = keep & valid
    rows = keep.flatten().nonzero().flatten()  # [K] kept tokens in the [B, T] output
    at = (where.flatten()[rows] if packed else rows).to(device)  # [K] the same tokens in the model's input
    hook = head.register_forward_pre_hook(lambda _, args: (args[0].flatten(0, -2)[at - 1], *args[1:]))
    try:
        logits = model(**inputs).logits  # [K, V]: from the hidden state just before each kept token
    finally:
        hook.remove()
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, model_ids.flatten()[at].unsqueeze(-1)).squeeze(-1)
    return logp.new_zeros(keep.numel()).index_put((rows.to(device),), logp).view(keep.shape)


def check_device(batch: RolloutBatch, device: torch.device) -> None:
    """Every tensor of ``batch`` on ``device`` (the policy's): a CPU tensor reaching a CUDA policy fails late
    and obscurely inside the model, so name the field here."""
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor) and value.device != torch.device(device):
            raise RuntimeError(f"rollout tensor '{f.name}' is on {value.device} but the policy is on {device}: "
                               f"move the batch with RolloutBatch.to(module.device)")


class KimiRLModule(L.LightningModule):
    """Policy (a transformers causal LM) + the configured loss; no value network, no reference model."""

    def __init__(self, model, algo: AlgoConfig) -> None:
        super().__init__()
        self.model = model.train()
        self.algo = algo
        self.loss_fn = LOSSES.get(algo.loss)
        self.automatic_optimization = False
        self.iteration = 0
        """RL iterations completed. During an iteration (batch start, training step) it is that
        iteration's index, i.e. the policy version of the rollouts sampled now; the training step
        increments it, so ``on_train_batch_end`` hooks see the completed count. The one owner of the
        number: the schedule and the sampler are functions of it, the checkpoint saves it."""
        self.skipped_steps = 0
        """Optimizer steps skipped for a non-finite loss or gradient."""
        self.last_metrics: dict[str, float] = {}
        self.last_iteration_end: float | None = None
        """``time.perf_counter()`` after the last iteration logged (``time/between_iterations_s`` counts from it)."""

    def configure_optimizers(self):
        return OPTIMIZERS.get(self.algo.optimizer)(self.model.parameters(), self.algo)

    def _reset_optimizer_state(self) -> None:
        reset_optimizer_state(self.optimizers().optimizer, self.algo.reset_scope)

    def _optimizer_state_steps(self) -> float:
        """Adam's step count in the optimizer state (0 for stateless SGD): with ``algo.reset_optimizer`` in scope
        ``all`` it equals this iteration's optimizer steps (the state was cleared at its start), otherwise it keeps
        counting."""
        opt = self.optimizers().optimizer
        return max((float(s["step"]) for s in opt.state.values() if "step" in s), default=0.0)

    def configure_model(self) -> None:
        mesh = data_parallel_mesh(self)
        if mesh is not None and not getattr(self, "_sharded", False):
            shard_model(self.model, mesh)
            self._sharded = True

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing: Lightning's validation loop (every ``rl.eval_every`` iterations) only gives the
        ``HeldoutEval`` callback its moment (it evaluates with the rollout engine)."""

    def training_step(self, batch: Iteration, batch_idx: int) -> None:
        """One k1.5 iteration's update on ``batch.rollouts``; afterwards ``iteration`` counts it as completed."""
        if batch.index is not None and batch.index != self.iteration:
            raise RuntimeError(f"the rollouts are of iteration {batch.index} but the policy is at {self.iteration}")
        self._update(batch.rollouts.batch if batch.rollouts is not None else None, batch.metrics)
        self.iteration += 1

    def _update(self, rollout: RolloutBatch | None, metrics: dict[str, float]) -> None:
        t0 = time.perf_counter()
        if self.algo.reset_optimizer:
            self._reset_optimizer_state()
        has_data = rollout is not None and rollout.input_ids.shape[0] > 0
        adv = self.loss_fn.advantages(rollout.rewards, rollout.group_index, self.algo) if has_data else None  # [N]
        train = rollout
        if has_data and self.algo.skip_uninformative_groups:
            train = rollout.select(informative_rows(adv, rollout.group_index))
            metrics["train/skipped_sample_frac"] = 1.0 - len(train) / len(rollout)
        if has_data:
            metrics.update({f"rollout/{k}": v for k, v in train.stats().items()})
        # logp_old := log pi_theta_i (Eq. 2) from this policy before its first step; collective under FSDP
        t_ref = time.perf_counter()
        train = self._with_reference_logprobs(train if has_data else None, metrics)
        metrics["time/ref_logp_s"] = time.perf_counter() - t_ref
        sums: dict[str, float] = {}
        steps = 0
        for update in range(self.algo.updates_per_iteration):
            cut = group_minibatches if self.algo.minibatch_by == "group" else minibatches
            mbs = list(cut(train, self.algo.minibatch_size, self.iteration * 1000 + update)) if has_data else []
            # every rank takes the same number of optimizer steps (DDP/FSDP collectives in backward)
            for i in range(max_across_ranks(len(mbs), self.device)):
                if i >= len(mbs):
                    self._empty_step()
                    continue
                out = self._step(mbs[i], adv)
                ref_err = out.pop("ref_logp_error_absmax", None)
                if update == 0 and i == 0 and ref_err is not None:
                    metrics["train/ref_logp_error_absmax"] = ref_err
                    if not self.algo.recompute_logp_old:  # logp_old is the engine's: this is its error
                        metrics["train/engine_logp_error_absmax"] = ref_err
                steps += 1
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v
        metrics["train/samples"] = float(len(rollout)) if has_data else 0.0
        if not has_data:
            return None
        metrics.update({f"train/{k}": v / max(steps, 1) for k, v in sums.items()})
        metrics["train/optimizer_steps"] = float(steps)
        metrics["train/optimizer_state_steps"] = self._optimizer_state_steps()
        metrics["train/skipped_steps"] = float(self.skipped_steps)
        tokens = float(train.attention_mask.sum()) * self.algo.updates_per_iteration
        dt = time.perf_counter() - t0
        metrics["time/train_s"] = dt
        metrics["throughput/train_tokens_per_s"] = tokens / max(dt, 1e-9)
        metrics["train/lr"] = self.optimizers().param_groups[0]["lr"]
        return None

    @torch.no_grad()
    def _with_reference_logprobs(self, train: RolloutBatch | None, metrics: dict[str, float]) -> RolloutBatch | None:
        """``train`` with ``logp_old`` = log pi_theta_i (Eq. 2: the policy this iteration starts from).

        ``algo.recompute_logp_old``: every trained token's reference comes from this policy's own forward pass;
        the engine's sampling-time log-probs of the tokens sampled in this iteration are compared with them
        (``train/engine_logp_error_absmax``/``_mean``, in the iterations whose rollouts recorded them:
        ``rollout.engine_logprobs_every``): a diagnostic of the engine, not an input of the loss.
        Off: the engine's log-probs stand for the tokens sampled in this iteration (same policy), and only the
        rows holding older partial-rollout segments are recomputed, so the tau term never anchors to an older
        policy (``train/stale_logp_shift_mean``: how far those tokens' log-probs moved since sampling).
        """
        if train is None or not len(train):
            rows = torch.zeros(0, dtype=torch.long)
        else:
            stale = train.loss_mask & (train.versions < self.iteration)  # [N, L]
            rows = (torch.arange(len(train)) if self.algo.recompute_logp_old
                    else stale.any(dim=1).nonzero().flatten())  # [M] rows of train to recompute
        chunks: list[torch.Tensor] = []
        if rows.numel():
            lengths = (train.prompt_lengths + train.response_lengths)[rows]  # [M]
            chunks = [rows[c] for c in torch.argsort(lengths, stable=True).split(self.algo.minibatch_size)]
        ref = torch.zeros_like(train.logp_old) if train is not None else None  # [N, L]
        for i in range(max_across_ranks(len(chunks), self.device)):
            if i >= len(chunks):
                self.model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=self.device))  # FSDP all-gathers
                continue
            mb = train.select(chunks[i])
            lengths, keep = self._pack_lengths(mb), mb.loss_mask  # read on the CPU, before the batch moves
            mb = mb.to(self.device)
            logp = token_logprobs(self.model, mb.input_ids, mb.attention_mask, lengths, keep,
                                  mb.images()).float()  # [B, T]
            ref[chunks[i], : logp.shape[1]] = (logp * mb.loss_mask).cpu()
        if train is None or not len(train):
            return train
        recorded = torch.isfinite(train.logp_old)  # [N, L]; NaN: the engine was not asked (rollout.engine_logprobs_every)
        fresh = train.loss_mask & (train.versions == self.iteration)  # [N, L]
        if not self.algo.recompute_logp_old:  # the first minibatch's forward measures the engine (_update)
            if not recorded[fresh].all():
                raise ValueError("algo.recompute_logp_old is false but some tokens sampled in this iteration have no "
                                 "engine log-prob (the rollout worker must ask for every one: logprobs_every 1)")
            if not stale.any():
                return train
            if (stale & recorded).any():
                metrics["train/stale_logp_shift_mean"] = float((ref - train.logp_old).abs()[stale & recorded].mean())
            return dataclasses.replace(train, logp_old=torch.where(stale, ref, train.logp_old))
        if (fresh & recorded).any():  # iterations whose rollouts asked the engine (rollout.engine_logprobs_every)
            gap = (ref - train.logp_old).abs()[fresh & recorded]
            metrics["train/engine_logp_error_absmax"] = float(gap.max())
            metrics["train/engine_logp_error_mean"] = float(gap.mean())
        if (stale & recorded).any():
            metrics["train/stale_logp_shift_mean"] = float((ref - train.logp_old).abs()[stale & recorded].mean())
        return dataclasses.replace(train, logp_old=ref)

    def _empty_step(self) -> None:
        """A zero-gradient step for a rank with no minibatch left, so collectives stay matched."""
        opt = self.optimizers()
        ids = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        self.manual_backward(self.model(input_ids=ids).logits.sum() * 0.0)
        if self.algo.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.algo.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def _pack_lengths(self, mb: RolloutBatch) -> list[int] | None:
        """Each row's prompt + response length when ``algo.pack_sequences`` (read before the batch moves)."""
        return (mb.prompt_lengths + mb.response_lengths).tolist() if self.algo.pack_sequences else None

    def _step(self, mb: RolloutBatch, adv: torch.Tensor) -> dict[str, float]:
        lengths, keep = self._pack_lengths(mb), mb.loss_mask  # read on the CPU, before the batch moves
        mb = mb.to(self.device)  # rollouts are built on the CPU; the policy may live on a GPU
        check_device(mb, self.device)
        token_logp = token_logprobs(self.model, mb.input_ids, mb.attention_mask, lengths, keep, mb.images())  # [B, T]
        mask = mb.loss_mask.float()  # [B, T]
        with torch.no_grad():  # before this iteration's first step the policy is the one logp_old came from
            ref_err = ((token_logp.detach() - mb.logp_old).abs() * mask).max() if mask.numel() else token_logp.new_zeros(())
        out = self.loss_fn(token_logp, mb.logp_old, mask, adv.to(self.device)[mb.index], self.algo)
        opt = self.optimizers()
        if not torch.isfinite(out.loss):
            self.skipped_steps += 1
            return {"nonfinite_loss": 1.0}
        self.manual_backward(out.loss)
        if self.algo.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.algo.max_grad_norm)
        else:
            norm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in self.model.parameters() if p.grad is not None))
        if not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            return {"nonfinite_loss": 1.0}
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            n_tok = mask.sum().clamp(min=1.0)
            diff = (token_logp.detach() - mb.logp_old) * mask  # [B, T]
            stats = {
                "loss": float(out.loss.detach()),
                "grad_norm": float(norm),
                "entropy_estimate": float(-(token_logp.detach() * mask).sum() / n_tok),
                "logp_minus_logp_old_mean": float(diff.sum() / n_tok),
                "logp_minus_logp_old_absmax": float(diff.abs().max()),
                "nonfinite_loss": 0.0,
                "ref_logp_error_absmax": float(ref_err),
            }
        stats.update({f"loss_{k}": float(v) for k, v in out.terms.items()})
        return stats

    def on_train_batch_end(self, outputs, batch: Iteration, batch_idx: int) -> None:
        """Log the iteration's metrics (every stage's; mean over ranks) at its number."""
        if batch.started_at is not None:  # rollout, scoring, update, weight sync: every hook of the iteration
            batch.metrics["time/iteration_s"] = time.perf_counter() - batch.started_at
        self.last_metrics = reduce_metrics(batch.metrics, self.trainer.strategy)
        if self.trainer.is_global_zero and self.logger is not None:
            self.logger.log_metrics(self.last_metrics, step=self.iteration - 1)  # the iteration just done
        shown = {k.split("/")[-1]: v for k, v in self.last_metrics.items()
                 if k in ("reward/mean", "reward/accuracy", "response/length_mean")}
        for k, v in shown.items():
            self.log(k, v, prog_bar=True, logger=False, batch_size=1)
        self.last_iteration_end = time.perf_counter()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["kimi_rl"] = {
            "iteration": self.iteration,
            "skipped_steps": self.skipped_steps,
            "model_shape": model_shape(self.model.config),
            "rng": gather_rank_states(capture_rng()),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("kimi_rl", {})
        check_model_shape(state.get("model_shape", {}), model_shape(self.model.config))
        self.iteration = int(state.get("iteration", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        if "rng" in state:
            pick_rank_state(state["rng"], restore_rng)


SHAPE_KEYS = {
    "vocab_size": "model.path (tokenizer)",
    "hidden_size": "model.hidden_size",
    "num_hidden_layers": "model.num_layers",
    "num_attention_heads": "model.num_heads",
    "num_key_value_heads": "model.num_kv_heads",
    "intermediate_size": "model.intermediate_size",
}


def model_shape(config) -> dict[str, int]:
    return {k: int(getattr(config, k)) for k in SHAPE_KEYS if getattr(config, k, None) is not None}


def check_model_shape(saved: dict[str, int], current: dict[str, int]) -> None:
    """Resuming needs the checkpoint's model shape; name the config key that changed."""
    for k, v in saved.items():
        if k in current and current[k] != v:
            raise ConfigError(f"{SHAPE_KEYS[k]}: the checkpoint was trained with {k}={v} but the config "
                              f"now gives {current[k]}; restore the key or start a new run (run.name)")


def reduce_metrics(metrics: dict[str, float], strategy=None) -> dict[str, float]:
    """Mean of each metric over the ranks that report it (identity when not distributed).

    A metric one rank lacks (e.g. no finished group there) is averaged over the ranks that have it, so
    the keys are gathered first; the sums go through ``strategy.reduce`` on its root device (NCCL: the GPU).
    """
    clean = {k: float(v) for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not is_distributed():
        return clean
    keys = sorted({k for state in gather_rank_states(sorted(clean)).values() for k in state})
    vals = torch.tensor([[clean.get(k, 0.0), float(k in clean)] for k in keys], dtype=torch.float64)  # [K, 2]
    if strategy is not None:
        vals = strategy.reduce(vals.to(strategy.root_device), reduce_op="sum")
    else:
        torch.distributed.all_reduce(vals)
    return {k: float(v / n) for k, (v, n) in zip(keys, vals.cpu().tolist()) if n > 0}
