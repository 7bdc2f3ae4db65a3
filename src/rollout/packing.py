"""Released groups -> right-padded training tensors, and length-bucketed minibatches over them.

Follows the paper's partial rollouts (2.6.2): each token keeps the iteration that sampled it, and a switch
masks out earlier segments; the bucketing by length is ours (it changes only the padding cost).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterator, Optional

import torch
from torch import Tensor

from kimi_rl.rollout.types import Group, Trajectory


@dataclass
class RolloutBatch:
    """Finished trajectories as tensors; row i is ``trajectories[i]``, tokens = prompt + response + padding."""

    input_ids: Tensor  # [N, L] long: prompt + response, right-padded with pad_id
    attention_mask: Tensor  # [N, L] long: 1 on prompt and response tokens
    loss_mask: Tensor  # [N, L] bool: response tokens that enter the loss
    logp_old: Tensor  # [N, L] float32: recorded log-prob of input_ids[i, t]; 0 off the response
    versions: Tensor  # [N, L] long: iteration that sampled input_ids[i, t]; -1 off the response
    rewards: Tensor  # [N] float32: trajectory.reward
    group_index: Tensor  # [N] long: group number 0..G-1 in the packed batch (kept as is in slices)
    prompt_lengths: Tensor  # [N] long
    response_lengths: Tensor  # [N] long
    index: Tensor  # [N] long: row in the batch pack_groups built (slices keep it: advantages[slice.index])
    trajectories: list[Trajectory]
    iteration: int
    """The iteration that packed this batch (for staleness statistics)."""
    pixel_values: Tensor | None = None  # [N, I, 3, H, W] float: row i's images (vision-language policies)
    pixel_attention_mask: Tensor | None = None  # [N, I, H, W] bool: their valid pixels

    def images(self) -> dict[str, Tensor] | None:
        """The rows' image inputs for ``token_logprobs``, or None for a text batch."""
        if self.pixel_values is None:
            return None
        return {"pixel_values": self.pixel_values, "pixel_attention_mask": self.pixel_attention_mask}

    def __len__(self) -> int:
        return len(self.trajectories)

    def select(self, rows: Tensor) -> RolloutBatch:
        """Rows ``rows`` ([B] long), with columns trimmed to the longest selected sequence."""
        width = int((self.prompt_lengths[rows] + self.response_lengths[rows]).max()) if rows.numel() else 0
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value[rows]  # [B] or [B, L]
                out[f.name] = value[:, :width] if value.dim() == 2 else value  # [B, width]
        return replace(self, **out, trajectories=[self.trajectories[i] for i in rows.tolist()])

    def to(self, device: torch.device | str) -> RolloutBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def stats(self) -> dict[str, float]:
        """Scalars for logging: loss tokens, and the share of them sampled before this iteration."""
        in_loss = self.loss_mask.sum()
        stale = (self.loss_mask & (self.versions < self.iteration)).sum()
        return {
            "batch_samples": float(len(self)),
            "batch_loss_tokens": float(in_loss),
            "batch_stale_token_frac": float(stale / in_loss) if in_loss > 0 else 0.0,
            "batch_response_tokens_mean": float(self.response_lengths.float().mean()) if len(self) else 0.0,
        }


def _check(t: Trajectory, current_iteration: int) -> None:
    where = f"trajectory of group {t.group_id}"
    if not t.finished:
        raise ValueError(f"pack_groups: {where} is unfinished; release only finished groups")
    if not len(t.response_ids) == len(t.logprobs) == len(t.versions):
        raise ValueError(f"pack_groups: {where} has {len(t.response_ids)} tokens, {len(t.logprobs)} logprobs "
                         f"and {len(t.versions)} versions; they must be equal")
    if t.versions and max(t.versions) > current_iteration:
        raise ValueError(f"pack_groups: {where} has tokens from iteration {max(t.versions)}, after the "
                         f"current iteration {current_iteration}")


def pack_groups(groups: list[Group], pad_id: int, current_iteration: int,
                loss_on_old_segments: bool) -> RolloutBatch:
    """All trajectories of ``groups`` (group by group) as one right-padded batch.

    Loss mask of response token t of a trajectory with versions v (paper 2.6.2)::

        loss_mask[t] = 1                          if loss_on_old_segments
        loss_mask[t] = 1[v_t == current_iteration] otherwise (only tokens sampled in this iteration train;
                                                  a trajectory that finished in an earlier iteration while
                                                  its group mates ran on keeps only its reward's share in
                                                  the group baseline)

    Prompt and padding positions are never in the loss. No groups give N = L = 0.
    """
    rows = [t for g in groups for t in g.trajectories]
    for t in rows:
        _check(t, current_iteration)
    n = len(rows)
    prompt_lengths = torch.tensor([len(t.prompt_ids) for t in rows], dtype=torch.long)  # [N]
    response_lengths = torch.tensor([len(t.response_ids) for t in rows], dtype=torch.long)  # [N]
    width = int((prompt_lengths + response_lengths).max()) if n else 0
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)  # [N, L]
    logp_old = torch.zeros(n, width, dtype=torch.float32)  # [N, L]
    versions = torch.full((n, width), -1, dtype=torch.long)  # [N, L]
    for i, t in enumerate(rows):
        p, r = len(t.prompt_ids), len(t.response_ids)
        input_ids[i, :p + r] = torch.tensor(t.prompt_ids + t.response_ids, dtype=torch.long)
        logp_old[i, p:p + r] = torch.tensor(t.logprobs, dtype=torch.float32)
        versions[i, p:p + r] = torch.tensor(t.versions, dtype=torch.long)
    positions = torch.arange(width)  # [L]
    attention_mask = (positions < (prompt_lengths + response_lengths)[:, None]).long()  # [N, L]
    response = (positions >= prompt_lengths[:, None]) & attention_mask.bool()  # [N, L]
    if loss_on_old_segments or width == 0:
        loss_mask = response  # [N, L]
    else:
        loss_mask = response & (versions == current_iteration)  # [N, L]
    group_index = torch.tensor([gi for gi, g in enumerate(groups) for _ in g.trajectories],
                               dtype=torch.long)  # [N]
    return RolloutBatch(
        input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, logp_old=logp_old,
        versions=versions, rewards=torch.tensor([float(t.reward) for t in rows], dtype=torch.float32),
        group_index=group_index, prompt_lengths=prompt_lengths, response_lengths=response_lengths,
        index=torch.arange(n), trajectories=rows, iteration=current_iteration,
    )


def minibatches(batch: RolloutBatch, size: int, shuffle_seed: Optional[int]) -> Iterator[RolloutBatch]:
    """Slices of at most ``size`` rows of similar total length, each trimmed to its own longest row.

    Rows are sorted by prompt + response length (ties broken by a seeded permutation) and cut into
    consecutive slices; the slices' order is then shuffled with ``shuffle_seed`` (None: shortest
    first, no randomness). Every row appears in exactly one slice.
    """
    if size < 1:
        raise ValueError(f"minibatches: size must be >= 1, got {size}")
    n = len(batch)
    lengths = batch.prompt_lengths + batch.response_lengths  # [N]
    if shuffle_seed is None:
        perm = torch.arange(n)  # [N]
    else:
        gen = torch.Generator().manual_seed(shuffle_seed)
        perm = torch.randperm(n, generator=gen)  # [N]
    order = perm[torch.sort(lengths[perm], stable=True).indices]  # [N] ascending length
    slices = list(order.split(size)) if n else []
    if shuffle_seed is not None:
        slices = [slices[i] for i in torch.randperm(len(slices), generator=gen).tolist()]
    for rows in slices:
        yield batch.select(rows)


def group_minibatches(batch: RolloutBatch, size: int, shuffle_seed: Optional[int]) -> Iterator[RolloutBatch]:
    """Slices of whole groups, at most ``size`` rows each (but never less than one group).

    Groups are sorted by their longest row (ties broken by a seeded permutation) and packed in
    that order; the slices' order is then shuffled with ``shuffle_seed``. Keeping a prompt's k
    samples in one optimizer step keeps the group baseline's cancellation inside the step:
    ``sum_j (r_j - mean r) = 0``, so the shared tokens of a group are not pushed down in one step
    and up in the next (row-level length buckets split correct from wrong samples).
    """
    if size < 1:
        raise ValueError(f"minibatches: size must be >= 1, got {size}")
    n = len(batch)
    if n == 0:
        return
    lengths = batch.prompt_lengths + batch.response_lengths  # [N]
    ids, inverse = torch.unique(batch.group_index, return_inverse=True)  # [G], [N]
    g = ids.numel()
    longest = torch.zeros(g, dtype=lengths.dtype).scatter_reduce(0, inverse, lengths, "amax")  # [G]
    if shuffle_seed is None:
        perm = torch.arange(g)  # [G]
    else:
        gen = torch.Generator().manual_seed(shuffle_seed)
        perm = torch.randperm(g, generator=gen)  # [G]
    order = perm[torch.sort(longest[perm], stable=True).indices].tolist()  # groups, ascending length
    members = [torch.nonzero(inverse == gi).flatten() for gi in range(g)]  # rows of each group
    slices: list[Tensor] = []
    current: list[Tensor] = []
    rows = 0
    for gi in order:
        k = members[gi].numel()
        if current and rows + k > size:
            slices.append(torch.cat(current))
            current, rows = [], 0
        current.append(members[gi])
        rows += k
    if current:
        slices.append(torch.cat(current))
    if shuffle_seed is not None:
        slices = [slices[i] for i in torch.randperm(len(slices), generator=gen).tolist()]
    for rows_ in slices:
        yield batch.select(rows_)


def pack_rows(lengths: list[int], width: int) -> list[list[int]]:
    """Rows of the given lengths into bins whose lengths sum to at most ``width`` (first-fit decreasing).

    Returns the bins as lists of row indices, each bin's rows longest first; a row longer than ``width`` gets
    a bin of its own. Every row is in exactly one bin. E.g. lengths [5, 3, 2, 4], width 6 -> [[0], [3, 2], [1]].
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(width - lengths[i])
    return bins


def packed_layout(lengths: list[int], bins: list[list[int]], n_cols: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Index tensors that pack right-padded rows ([B, n_cols], row i = its first ``lengths[i]`` tokens) into the
    ``bins`` of ``pack_rows`` (width W = the longest row) and gather the packed result back:

    - ``source`` [P, W]: flat index into the padded rows of each packed token (0 on a bin's unused tail);
    - ``positions`` [P, W]: position ids restarting at 0 per row (the tail counts from 0: a sequence of its own);
    - ``where`` [B, n_cols]: flat index into the packed result of each padded position;
    - ``valid`` [B, n_cols]: real tokens from t = 1 on (at t = 0 a packed row looked at the row before it).
    """
    width = max(lengths)
    span = torch.arange(max(width, n_cols))  # [max(W, T)]
    source = torch.zeros(len(bins), width, dtype=torch.long)  # [P, W]
    positions = span[:width].repeat(len(bins), 1)  # [P, W]
    where = torch.zeros(len(lengths), n_cols, dtype=torch.long)  # [B, T]
    for b, rows in enumerate(bins):
        start = 0
        for i in rows:
            n = lengths[i]
            source[b, start:start + n] = i * n_cols + span[:n]
            positions[b, start:start + n] = span[:n]
            where[i] = b * width + start + span[:n_cols].clamp(max=n - 1)
            start += n
        positions[b, start:] = span[: width - start]
    t = span[:n_cols]  # [T]
    valid = (t >= 1) & (t < torch.tensor(lengths)[:, None])  # [B, T]
    return source, positions, where, valid
