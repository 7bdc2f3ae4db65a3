"""The transformers engine's batch helpers on hand-made numbers (the engine itself: test_engines.py)."""
from __future__ import annotations

import math

import torch

from kimi_rl.rollout.engines.hf import cut_at_eos, left_pad, sampled_logprobs


def test_left_pad_right_aligns_prompts_with_a_mask():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_sampled_logprobs_read_the_raw_logits():
    # step 0: logits (0, ln 3) -> p = (1/4, 3/4); step 1: uniform over 2 -> p = 1/2
    logits = (torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[1.0, 1.0]]))
    out = sampled_logprobs(logits, torch.tensor([[1, 0]]))
    assert torch.allclose(out, torch.tensor([[math.log(0.75), math.log(0.5)]]))


def test_cut_at_eos_keeps_the_first_eos_within_the_budget():
    eos = {2}
    assert cut_at_eos([5, 2, 0, 0], [-1.0, -2.0, -3.0, -4.0], budget=4, eos=eos).token_ids == [5, 2]
    stopped = cut_at_eos([5, 2, 0], [-1.0, -2.0, -3.0], budget=2, eos=eos)
    assert (stopped.finish_reason, stopped.logprobs) == ("stop", [-1.0, -2.0])
    cut = cut_at_eos([5, 6, 2], [-1.0, -2.0, -3.0], budget=2, eos=eos)
    assert (cut.token_ids, cut.finish_reason) == ([5, 6], "length")
