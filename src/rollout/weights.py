"""Trained weights in the form engines load: a full, Hugging Face-named state dict on one device.

Handles the wrappers training adds (DDP, torch.compile, FSDP2/DTensor shards, a LightningModule
attribute) and always names the output layer, tied or not (vLLM keeps a stale one otherwise).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kimi_rl.models.modeling import save_tokenizer

WRAPPER_PARTS = ("_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
"""Name parts added by torch.compile, FSDP1 and activation checkpointing, anywhere in a name."""
LEADING_PARTS = ("module.",)
"""Name parts added by DDP / DataParallel around the whole model."""
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")
"""Input-embedding names a tied output layer shares its weight with."""


def engine_name(name: str, prefix: str = "") -> str | None:
    """The HF parameter name of a training state-dict key; None when it lies outside ``prefix``.

    ``engine_name("model._orig_mod.model.norm.weight", "model.")`` -> ``"model.norm.weight"``.
    """
    for part in LEADING_PARTS:
        while name.startswith(part):
            name = name[len(part):]
    if prefix:
        if not name.startswith(prefix):
            return None
        name = name[len(prefix):]
    for part in WRAPPER_PARTS:
        name = name.replace(part, "")
    for part in LEADING_PARTS:
        while name.startswith(part):
            name = name[len(part):]
    return name


def _is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every rank gets full tensors (FSDP2 gathers; ``cpu_offload=True`` would leave ranks > 0 empty)."""
    if not _is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))


def tie_output_layer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add ``lm_head.weight`` (the input embedding, for tied models) when the dict lacks it."""
    if "lm_head.weight" in state:
        return state
    shared = [k for k in state if k.endswith(EMBEDDING_SUFFIXES)]
    if len(shared) != 1:
        raise KeyError(
            f"state dict has no 'lm_head.weight' and {len(shared)} input embeddings {shared} to tie it to; "
            f"keys start with {sorted(state)[:3]}"
        )
    return {**state, "lm_head.weight": state[shared[0]]}


def save_policy(model, tokenizer, folder: Path, is_rank_zero: bool) -> None:
    """Write the (possibly sharded) policy as a HF folder; every rank must call it (gathers under FSDP)."""
    state = full_state_dict_for_engine(model)
    if is_rank_zero:
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(folder), state_dict=state)
        save_tokenizer(tokenizer, folder)


def full_state_dict_for_engine(
    model: nn.Module, prefix: str = "", device: str | torch.device | None = "cpu"
) -> dict[str, torch.Tensor]:
    """HF-named full weights of ``model`` for ``Engine.load_weights``: detached, contiguous.

    ``model``: a transformers model, possibly DDP-wrapped, compiled or FSDP2-sharded, or a module
    holding it under ``prefix`` (e.g. ``"model."`` for a LightningModule's ``self.model``).
    ``device``: where the tensors go (None keeps them where they are, e.g. on the GPU).
    Collective under FSDP2: every rank must call it.
    """
    state = {}
    for key, tensor in _full_state_dict(model).items():
        name = engine_name(key, prefix)
        if name is None:
            continue
        tensor = tensor.detach()
        state[name] = (tensor if device is None else tensor.to(device)).contiguous()
    if not state:
        raise KeyError(f"no weights under prefix '{prefix}' in a state dict of {type(model).__name__}")
    output_layer = getattr(model, "get_output_embeddings", None)
    if output_layer is not None and output_layer() is None:  # e.g. a reward model's classification head
        return state
    return tie_output_layer(state)
