"""Packing released groups into tensors (src/rollout/packing.py): masks, logp_old alignment, minibatches."""
from __future__ import annotations

import pytest
import torch

from kimi_rl.rollout.packing import minibatches, pack_groups
from kimi_rl.rollout.types import Group, Trajectory
from kimi_rl.tasks.base import Problem

PAD = 99


def group(uid: str, *rows: tuple[list[int], list[int], list[float], list[int], str, float]) -> Group:
    p = Problem(uid=uid, question="q", answer="a")
    trajectories = [Trajectory(group_id=f"{uid}@0", problem=p, prompt_ids=prompt, response_ids=resp,
                               logprobs=lp, versions=ver, finish_reason=reason, reward=reward)
                    for prompt, resp, lp, ver, reason, reward in rows]
    return Group(group_id=f"{uid}@0", problem=p, trajectories=trajectories)


def hand_groups() -> list[Group]:
    return [
        group("a", ([1, 2], [3, 4, 5], [-0.125, -0.25, -0.375], [1, 2, 2], "stop", 1.0),
              ([1, 2], [6], [-0.5], [2], "length", 0.0)),
        group("b", ([7], [8, 9, 10, 11], [-1.0, -2.0, -3.0, -4.0], [0, 0, 1, 2], "repeat", 0.5)),
    ]


def test_tensors_of_hand_built_trajectories() -> None:
    batch = pack_groups(hand_groups(), PAD, current_iteration=2, loss_on_old_segments=True)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [1, 2, 6, PAD, PAD], [7, 8, 9, 10, 11]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.loss_mask.int().tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0], [0, 1, 1, 1, 1]]
    # logp_old[i, t] is the log-prob recorded for input_ids[i, t].
    assert batch.logp_old.tolist() == [[0, 0, -0.125, -0.25, -0.375], [0, 0, -0.5, 0, 0], [0, -1, -2, -3, -4]]
    assert batch.versions.tolist() == [[-1, -1, 1, 2, 2], [-1, -1, 2, -1, -1], [-1, 0, 0, 1, 2]]
    assert batch.rewards.tolist() == [1.0, 0.0, 0.5]
    assert batch.group_index.tolist() == [0, 0, 1] and batch.group_index.dtype == torch.long
    assert batch.prompt_lengths.tolist() == [2, 2, 1] and batch.response_lengths.tolist() == [3, 1, 4]
    assert batch.index.tolist() == [0, 1, 2] and len(batch) == 3
    assert [t.response_ids[0] for t in batch.trajectories] == [3, 6, 8]
    # 8 loss tokens, 4 sampled before iteration 2 (versions 1, 0, 0, 1).
    assert batch.stats() == {"batch_samples": 3.0, "batch_loss_tokens": 8.0, "batch_stale_token_frac": 0.5,
                             "batch_response_tokens_mean": pytest.approx(8 / 3)}


def test_old_segments_masked_out_when_switched_off() -> None:
    batch = pack_groups(hand_groups(), PAD, current_iteration=2, loss_on_old_segments=False)
    # Only tokens sampled in the current iteration (2) train.
    assert batch.loss_mask.int().tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0], [0, 0, 0, 0, 1]]
    assert batch.logp_old[2].tolist() == [0, -1, -2, -3, -4]  # recorded values stay; only the mask changes
    assert batch.stats()["batch_loss_tokens"] == 4.0 and batch.stats()["batch_stale_token_frac"] == 0.0
    # released one iteration later (the group waited for a slower mate): nothing of theirs trains now
    late = pack_groups(hand_groups(), PAD, current_iteration=3, loss_on_old_segments=False)
    assert late.loss_mask.sum() == 0 and late.rewards.tolist() == [1.0, 0.0, 0.5]


def test_logp_old_lines_up_with_the_log_probs_a_forward_pass_gives() -> None:
    torch.manual_seed(0)
    bigram = torch.randn(12, 12)  # a tiny "model": logits of the next token = bigram[current token]
    rows = []
    for prompt in ([1, 2, 3], [4], [5, 6]):
        tokens, logprobs = list(prompt), []
        for _ in range(torch.randint(1, 6, ()).item()):
            dist = torch.log_softmax(bigram[tokens[-1]], dim=-1)  # [V]
            nxt = int(torch.multinomial(dist.exp(), 1))
            tokens.append(nxt)
            logprobs.append(float(dist[nxt]))
        rows.append((prompt, tokens[len(prompt):], logprobs, [0] * len(logprobs), "stop", 0.0))
    batch = pack_groups([group("a", *rows)], pad_id=11, current_iteration=0, loss_on_old_segments=True)
    logits = bigram[batch.input_ids]  # [N, L, V]
    logp_all = torch.log_softmax(logits[:, :-1], dim=-1)  # [N, L-1, V]: predicts input_ids[:, 1:]
    token_logp = logp_all.gather(-1, batch.input_ids[:, 1:, None])[..., 0]  # [N, L-1]
    mask = batch.loss_mask[:, 1:]  # [N, L-1]
    assert mask.sum() == sum(len(r[1]) for r in rows) and not batch.loss_mask[:, 0].any()
    torch.testing.assert_close(token_logp[mask], batch.logp_old[:, 1:][mask])


def test_pack_rejects_unfinished_and_inconsistent_trajectories() -> None:
    with pytest.raises(ValueError, match="group a@0 is unfinished"):
        pack_groups([group("a", ([1], [2], [-1.0], [0], None, 0.0))], PAD, 0, True)
    with pytest.raises(ValueError, match="2 tokens, 1 logprobs and 2 versions"):
        pack_groups([group("a", ([1], [2, 3], [-1.0], [0, 0], "stop", 0.0))], PAD, 0, True)
    with pytest.raises(ValueError, match="tokens from iteration 5, after the current iteration 4"):
        pack_groups([group("a", ([1], [2], [-1.0], [5], "stop", 0.0))], PAD, 4, True)


def test_no_groups_give_an_empty_batch() -> None:
    batch = pack_groups([], PAD, 0, loss_on_old_segments=False)
    assert len(batch) == 0 and batch.input_ids.shape == (0, 0)
    assert list(minibatches(batch, 4, shuffle_seed=0)) == []


def varied_batch():
    rows = [([1] * p, [2] * r, [-0.5] * r, [0] * r, "stop", float(i)) for i, (p, r) in
            enumerate([(2, 9), (1, 1), (3, 4), (2, 2), (1, 7), (2, 1), (3, 3)])]  # totals 11 2 7 4 8 3 6
    return pack_groups([group("a", *rows[:4]), group("b", *rows[4:])], PAD, 0, loss_on_old_segments=True)


def test_minibatches_bucket_by_length_and_trim_padding() -> None:
    batch = varied_batch()
    slices = list(minibatches(batch, size=3, shuffle_seed=None))
    # Total lengths 2 3 4 | 6 7 8 | 11, each slice as wide as its longest row.
    assert [s.index.tolist() for s in slices] == [[1, 5, 3], [6, 2, 4], [0]]
    assert [s.input_ids.shape[1] for s in slices] == [4, 8, 11]
    for s in slices:
        width = s.input_ids.shape[1]
        assert not batch.attention_mask[s.index, width:].any()  # only padding was trimmed
        for name in ("input_ids", "attention_mask", "loss_mask", "logp_old", "versions"):
            assert torch.equal(getattr(s, name), getattr(batch, name)[s.index, :width]), name
        assert s.rewards.tolist() == [float(i) for i in s.index.tolist()]
        assert s.group_index.tolist() == batch.group_index[s.index].tolist()
        assert [t.response_ids for t in s.trajectories] == [batch.trajectories[i].response_ids for i in s.index]


def test_minibatches_shuffle_is_seeded_and_covers_every_row_once() -> None:
    batch = varied_batch()
    first = [s.index.tolist() for s in minibatches(batch, size=2, shuffle_seed=3)]
    assert first == [s.index.tolist() for s in minibatches(batch, size=2, shuffle_seed=3)]
    assert sorted(i for rows in first for i in rows) == list(range(7))
    orders = {tuple(map(tuple, (s.index.tolist() for s in minibatches(batch, 2, seed)))) for seed in range(8)}
    assert len(orders) > 1
    with pytest.raises(ValueError, match="size must be >= 1"):
        next(minibatches(batch, size=0, shuffle_seed=None))


def test_group_minibatches_keep_whole_groups_sorted_by_longest_row() -> None:
    from kimi_rl.rollout.packing import group_minibatches

    batch = varied_batch()  # group a: rows 0-3 (totals 11 2 7 4), group b: rows 4-6 (totals 8 3 6)
    slices = [s.index.tolist() for s in group_minibatches(batch, size=4, shuffle_seed=None)]
    assert slices == [[4, 5, 6], [0, 1, 2, 3]]  # b's longest (8) < a's (11); 3 + 4 rows > 4: two steps
    assert [s.index.tolist() for s in group_minibatches(batch, size=7, shuffle_seed=None)] == [[4, 5, 6, 0, 1, 2, 3]]
    # a group larger than size is still one step, never split
    assert [len(s) for s in group_minibatches(batch, size=2, shuffle_seed=None)] == [3, 4]
    seeded = [s.index.tolist() for s in group_minibatches(batch, size=4, shuffle_seed=5)]
    assert sorted(map(tuple, seeded)) == sorted(map(tuple, slices))
    for s in group_minibatches(batch, size=4, shuffle_seed=1):
        assert s.input_ids.shape[1] == int((s.prompt_lengths + s.response_lengths).max())
    with pytest.raises(ValueError, match="size must be >= 1"):
        next(group_minibatches(batch, size=0, shuffle_seed=None))
