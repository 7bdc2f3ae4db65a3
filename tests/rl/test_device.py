"""The device path on a CPU-only machine: rollout tensors reach the policy on its device, RNG state per
device in checkpoints, and GPU-only checks that skip here with a reason (``make gpu-check`` runs them)."""
from __future__ import annotations

import pytest
import torch

from kimi_rl.config import AlgoConfig
from kimi_rl.models.modeling import load_model
from kimi_rl.rl.module import KimiRLModule, capture_rng, check_device, restore_rng
from kimi_rl.rollout.packing import pack_groups
from kimi_rl.rollout.types import Group, Trajectory
from kimi_rl.tasks.base import Problem


class _Reached(Exception):
    """Raised by the forward pre-hook once it has seen the policy's inputs (no compute on the fake device)."""


def cpu_batch():
    p = Problem(uid="a", question="1+1=", answer="2")
    rows = [Trajectory(group_id="a@0", problem=p, prompt_ids=[1, 5, 6], response_ids=[7, 8], logprobs=[-1.0, -2.0],
                       versions=[0, 0], finish_reason="stop", reward=float(i % 2)) for i in range(4)]
    return pack_groups([Group(group_id="a@0", problem=p, trajectories=rows)], 0, 0, True)


def test_rollout_tensors_reach_the_policy_on_its_device(tiny_model_dir):
    """Lightning moves a batch to the device before ``on_train_batch_start``, where the rollout callback then
    builds CPU tensors: the module must move them itself. Here the module claims a device other than the CPU
    (``meta``): a forward pre-hook records the device of the token ids that reach the policy."""
    module = KimiRLModule(load_model(tiny_model_dir), AlgoConfig())
    module._device = torch.device("meta")  # what Lightning sets when it places the module
    seen = []

    def hook(_mod, args, kwargs):
        seen.append(kwargs["input_ids"].device)
        raise _Reached

    module.model.register_forward_pre_hook(hook, with_kwargs=True)
    batch = cpu_batch()
    assert batch.input_ids.device.type == "cpu"
    with pytest.raises(_Reached):
        module._step(batch, torch.zeros(len(batch)))
    assert seen == [torch.device("meta")]


def test_check_device_names_the_field():
    batch = cpu_batch()
    check_device(batch, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="rollout tensor 'input_ids' is on cpu but the policy is on meta"):
        check_device(batch, torch.device("meta"))


def test_rng_state_round_trips_and_holds_cuda_only_when_cuda_runs():
    state = capture_rng()
    assert ("cuda" in state) == (torch.cuda.is_available() and torch.cuda.is_initialized())
    first = torch.rand(3)
    restore_rng(state)
    assert torch.equal(torch.rand(3), first)


@pytest.mark.gpu
def test_cuda_rng_state_is_saved_and_restored():
    torch.cuda.init()
    state = capture_rng()
    assert len(state["cuda"]) == torch.cuda.device_count()
    first = torch.rand(3, device="cuda")
    restore_rng(state)
    assert torch.equal(torch.rand(3, device="cuda"), first)


@pytest.mark.gpu
def test_rollout_batch_moves_to_the_gpu(tiny_model_dir):
    module = KimiRLModule(load_model(tiny_model_dir), AlgoConfig()).cuda()
    module._device = torch.device("cuda", torch.cuda.current_device())
    moved = cpu_batch().to(module.device)
    check_device(moved, module.device)
    with torch.no_grad():
        from kimi_rl.rl.module import token_logprobs

        logp = token_logprobs(module.model, moved.input_ids, moved.attention_mask)
    assert logp.device.type == "cuda" and torch.isfinite(logp).all()
