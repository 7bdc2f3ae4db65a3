"""Packed forward passes give the padded layout's log-probs and gradients (algo.pack_sequences)."""
from __future__ import annotations

import pytest
import torch

from kimi_rl.config import ModelConfig
from kimi_rl.models.modeling import build_model_config
from kimi_rl.rl.module import token_logprobs
from kimi_rl.rollout.packing import pack_rows


def test_pack_rows_first_fit_decreasing_by_hand():
    assert pack_rows([5, 3, 2, 4], 6) == [[0], [3, 2], [1]]  # 5 | 4+2 | 3 (3 does not fit beside 5 or 4+2)
    assert pack_rows([1, 1, 1], 3) == [[0, 1, 2]]
    assert pack_rows([7, 2], 5) == [[0], [1]]  # a row wider than the bins gets one of its own
    assert pack_rows([], 4) == []
    bins = pack_rows([9, 1, 8, 2, 7, 3, 6, 4, 5], 10)
    assert sorted(i for b in bins for i in b) == list(range(9)) and len(bins) == 5  # 9+1, 8+2, 7+3, 6+4, 5


def padded_batch(lengths: list[int], vocab: int, pad: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths) + 2  # wider than any row, as a selected minibatch may be
    ids = torch.full((len(lengths), width), pad, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(0, vocab, (n,), generator=gen)
        mask[i, :n] = 1
    return ids, mask


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_packed_equals_padded_in_values_and_gradients(arch):
    from transformers import AutoModelForCausalLM

    cfg = ModelConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build_model_config(cfg, 50, 1, 2, 0), dtype=torch.float32)
    lengths = [12, 3, 7, 1, 9, 2, 12, 5]  # several rows share a bin of width 12, one row is a lone token
    ids, mask = padded_batch(lengths, 50, pad=0)
    assert len(pack_rows(lengths, 12)) < len(lengths)  # the packed path is really taken

    weights = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) * mask  # a loss over real tokens
    out = {}
    for pack in (False, True):
        model.zero_grad()
        logp = token_logprobs(model, ids, mask, lengths if pack else None)  # [B, T]
        assert logp.shape == ids.shape
        (logp * weights).sum().backward()
        out[pack] = (logp.detach() * mask, [p.grad.clone() for p in model.parameters()])
    real = mask.bool() & (torch.arange(ids.shape[1]) >= 1)
    assert torch.allclose(out[True][0][real], out[False][0][real], atol=1e-5)
    assert (out[True][0][~real] == 0).all()  # padding and each row's first token: 0
    assert (out[False][0][real] < 0).all()  # real log-probs, not zeros
    for packed_grad, padded_grad in zip(out[True][1], out[False][1]):
        assert torch.allclose(packed_grad, padded_grad, atol=1e-5, rtol=1e-4)


def test_packing_without_a_block_mask_would_differ():
    """The check above can fail: the same packed rows with one causal mask over the whole bin (rows seeing
    their neighbours) give other log-probs."""
    from transformers import AutoModelForCausalLM

    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build_model_config(cfg, 50, 1, 2, 0), dtype=torch.float32)
    ids, mask = padded_batch([6, 4], 50, pad=0)
    alone = token_logprobs(model, ids[1:, :4], mask[1:, :4])[0]  # row 1 by itself
    joined = torch.cat([ids[0, :6], ids[1, :4]])[None]
    after = token_logprobs(model, joined, torch.ones_like(joined))[0, 7:]  # row 1 behind row 0, one mask
    assert not torch.allclose(alone[1:], after, atol=1e-3)


@pytest.mark.parametrize("pack", [False, True])
def test_head_on_kept_tokens_only_gives_their_logprobs_and_gradients(pack):
    """``keep`` (the trained tokens): the LM head sees only the hidden states predicting them, and their
    log-probs and gradients equal the full forward's; every other position is 0."""
    from transformers import AutoModelForCausalLM

    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                      max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build_model_config(cfg, 50, 1, 2, 0), dtype=torch.float32)
    lengths = [12, 3, 7, 1, 9, 2, 12, 5]
    ids, mask = padded_batch(lengths, 50, pad=0)
    prompt = torch.tensor([4, 1, 3, 1, 5, 1, 6, 2])[:, None]  # each row's prompt length: the rest is trained
    keep = mask.bool() & (torch.arange(ids.shape[1]) >= prompt)  # [B, T]
    weights = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) * keep
    seen = []  # the head's input rows per forward
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(a[0].shape[:-1].numel()))
    out = {}
    for narrow in (False, True):
        model.zero_grad()
        logp = token_logprobs(model, ids, mask, lengths if pack else None, keep if narrow else None)  # [B, T]
        assert logp.shape == ids.shape
        (logp * weights).sum().backward()
        out[narrow] = (logp.detach(), [p.grad.clone() for p in model.parameters()])
    hook.remove()
    assert seen[1] == int(keep.sum()) < sum(lengths) <= seen[0]  # the head ran on the kept tokens only
    assert torch.allclose(out[True][0][keep], out[False][0][keep], atol=1e-5)
    assert (out[True][0][keep] < 0).all() and (out[True][0][~keep] == 0).all()
    for narrow_grad, full_grad in zip(out[True][1], out[False][1]):
        assert torch.allclose(narrow_grad, full_grad, atol=1e-5, rtol=1e-4)
