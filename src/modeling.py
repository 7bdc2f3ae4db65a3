"""Model folders: build the tiny model from config, check and load local HF folders.

Every model the project trains or samples lives in a Hugging Face folder on disk, so
transformers, vLLM and ``make eval`` all read the same thing.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from kimi_rl.config import ConfigError, ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model_config(cfg: ModelConfig, vocab_size: int, bos: int, eos: int, pad: int):
    """A transformers config of ``cfg.arch`` with the sizes of ``cfg``."""
    from transformers import LlamaConfig, Qwen2Config

    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[cfg.arch]
    return cls(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        rms_norm_eps=1e-6,
        dtype=cfg.dtype,
    )


def build_tiny_model(cfg: ModelConfig, folder: Path, seed: int = 0) -> Path:
    """Write a freshly initialised model + the character tokenizer to ``folder``."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from kimi_rl.tokenizer import save_char_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = save_char_tokenizer(folder)
    mcfg = build_model_config(cfg, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(mcfg, dtype=DTYPES[cfg.dtype])
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(str(folder))
    return folder


def check_model_folder(path: str | Path, key: str = "model.path") -> Path:
    """Fail early, naming ``key``, unless ``path`` is a HF model folder with weights."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{key}: '{p}' does not exist")
    if not p.is_dir():
        raise ConfigError(f"{key}: '{p}' is not a folder (expected a Hugging Face model folder)")
    if not (p / "config.json").is_file():
        raise ConfigError(f"{key}: '{p}' has no config.json: not a Hugging Face model folder")
    weights = list(p.glob("*.safetensors")) + list(p.glob("*.bin"))
    if not weights:
        raise ConfigError(f"{key}: '{p}' has no *.safetensors or *.bin weights")
    try:
        json.loads((p / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{key}: '{p}/config.json' is not valid JSON: {e}") from None
    return p


def load_tokenizer(path: str | Path):
    """The folder's tokenizer; the built-in character tokenizer is loaded as saved (see tokenizer.py)."""
    from transformers import AutoTokenizer

    from kimi_rl.tokenizer import is_char_tokenizer_folder, load_char_tokenizer

    tok = load_char_tokenizer(path) if is_char_tokenizer_folder(path) else AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, dtype: str = "float32"):
    """A causal LM from a local folder, in training mode's dtype."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])


def save_model(model, tokenizer, folder: Path) -> Path:
    """Save ``model`` (full weights, incl. lm_head) and ``tokenizer`` as a HF folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def eos_ids(tokenizer, model_config=None) -> list[int]:
    """All token ids that end a response (tokenizer eos and the model's eos list)."""
    ids = {tokenizer.eos_token_id}
    eos = getattr(model_config, "eos_token_id", None) if model_config is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(eos)
    return sorted(i for i in ids if i is not None)
