"""Engine state dicts from plain, wrapped, compiled and FSDP2-sharded models."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from kimi_rl.models.modeling import load_model
from kimi_rl.rollout.weights import engine_name, full_state_dict_for_engine, tie_output_layer


@pytest.mark.parametrize("key, prefix, expected", [
    ("model.norm.weight", "", "model.norm.weight"),
    ("module.model.norm.weight", "", "model.norm.weight"),
    ("_orig_mod.lm_head.weight", "", "lm_head.weight"),
    ("model._orig_mod.model.norm.weight", "model.", "model.norm.weight"),
    ("module.model.model.layers.0._checkpoint_wrapped_module.mlp.up_proj.weight", "model.",
     "model.layers.0.mlp.up_proj.weight"),
    ("ref.lm_head.weight", "model.", None),
])
def test_engine_name_strips_wrappers_and_prefix(key, prefix, expected):
    assert engine_name(key, prefix) == expected


def test_plain_model_gives_hf_names_on_cpu(tiny_model_dir):
    model = load_model(tiny_model_dir)
    state = full_state_dict_for_engine(model)
    assert set(state) == set(model.state_dict()) and "lm_head.weight" in state
    for name, tensor in state.items():
        assert tensor.device.type == "cpu" and tensor.is_contiguous() and not tensor.requires_grad
        assert torch.equal(tensor, model.state_dict()[name])


class Holder(nn.Module):
    """Like a LightningModule: the HF model under ``self.model`` next to other modules."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = torch.compile(model)  # names gain "_orig_mod."; compiled lazily, never run here
        self.value_head = nn.Linear(2, 1)


def test_wrapped_and_compiled_model_under_a_prefix(tiny_model_dir):
    model = load_model(tiny_model_dir)
    state = full_state_dict_for_engine(Holder(model), prefix="model.")
    assert set(state) == set(model.state_dict())
    assert torch.equal(state["model.norm.weight"], model.model.norm.weight)


def test_tied_output_layer_is_named():
    embed = torch.arange(6.0).reshape(3, 2)
    state = tie_output_layer({"model.embed_tokens.weight": embed, "model.norm.weight": torch.ones(2)})
    assert torch.equal(state["lm_head.weight"], embed)
    with pytest.raises(KeyError, match="no 'lm_head.weight' and 0 input embeddings"):
        tie_output_layer({"model.norm.weight": torch.ones(2)})


FSDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from torch.nn.parallel import DistributedDataParallel
    from kimi_rl.distributed import repeated_blocks, shard_model
    from kimi_rl.models.modeling import load_model
    from kimi_rl.rollout.weights import full_state_dict_for_engine

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", world_size=1, rank=0)
    expected = load_model(sys.argv[1]).state_dict()
    ddp = full_state_dict_for_engine(DistributedDataParallel(load_model(sys.argv[1])))
    sharded = load_model(sys.argv[1])
    blocks = len(repeated_blocks(sharded))
    assert blocks == int(sys.argv[2]), blocks  # a vision-language model's text and image-encoder layers
    shard_model(sharded, init_device_mesh("cpu", (1,)))
    assert all(isinstance(p, DTensor) for p in sharded.parameters())
    fsdp = full_state_dict_for_engine(sharded)
    for state in (ddp, fsdp):
        assert set(state) == set(expected), sorted(set(state) ^ set(expected))[:4]
        assert all(type(t) is torch.Tensor and torch.equal(t, expected[k]) for k, t in state.items())
    dist.destroy_process_group()
    print("OK")
""")


@pytest.mark.parametrize("arch", ["qwen2", "idefics3"])
def test_ddp_and_fsdp2_models_give_full_hf_named_tensors(tiny_model_dir, tiny_vl_dir, tmp_path, arch):
    """In a child process: a process group must not leak into this one (vLLM owns its own). FSDP2 shards every
    repeated block, a vision-language model's image-encoder layers too (a run with trainer=fsdp failed on it)."""
    folder, blocks = tiny_model_dir, 2  # the fixture's num_layers
    if arch == "idefics3":
        folder = tiny_vl_dir
        blocks = 2 + len(load_model(folder).model.vision_model.encoder.layers)
    script = tmp_path / "fsdp_state.py"
    script.write_text(FSDP_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(folder), str(blocks)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
