"""Model folders: build the tiny model from config, check and load local HF folders.

Every model the project trains or samples lives in a Hugging Face folder on disk, so
transformers, vLLM and ``make eval`` all read the same thing.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from kimi_rl.config import ConfigError, ModelConfig
from kimi_rl.models.tokenizer import is_char_tokenizer_folder, load_char_tokenizer, save_char_tokenizer

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

    if cfg.arch == "idefics3":
        from kimi_rl.models.vision import build_tiny_vl_model

        return build_tiny_vl_model(cfg, folder, seed)

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
    check_weight_shapes(p, key)
    return p


def model_context(path: str | Path) -> int | None:
    """Longest prompt + response (tokens) the model folder's config.json allows, or None when it does not say."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    for section in (cfg, cfg.get("text_config") or {}):
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            if isinstance(section.get(name), int) and section[name] > 0:
                return section[name]
    return None


def _safetensors_shapes(path: Path, key: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header (8-byte length, then JSON), without reading the weights;
    a file shorter than its header says (a truncated copy) is an error."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= min(size - 8, 1 << 28):
                raise ValueError(f"header length {n} does not fit the file's {size} bytes")
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{key}: '{path}' is not a readable safetensors file ({e})") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if size < 8 + n + end:
        raise ConfigError(f"{key}: '{path}' is truncated: {size} bytes where its header needs {8 + n + end}")
    return {k: tuple(v["shape"]) for k, v in tensors.items()}


def _weight_shapes(folder: Path, key: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor of the folder's weight files: name -> (shape, file name)."""
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        shapes.update({k: (v, f.name) for k, v in _safetensors_shapes(f, key).items()})
    if files:
        return shapes
    for f in sorted(folder.glob("*.bin")):
        try:  # memory-mapped: only the shapes are read
            state = torch.load(str(f), map_location="cpu", mmap=True, weights_only=True)
        except Exception as e:
            raise ConfigError(f"{key}: '{f}' is not a readable PyTorch weights file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
        shapes.update({k: (tuple(v.shape), f.name) for k, v in state.items() if isinstance(v, torch.Tensor)})
    return shapes


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def check_weight_shapes(folder: Path, key: str = "model.path") -> None:
    """config.json and the weights agree: every tensor both name has one shape, the layer count matches, and an
    untied model has its lm_head. Reads file headers and builds the model on the meta device (no memory)."""
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText,
                              AutoModelForSequenceClassification)

    try:
        config = AutoConfig.from_pretrained(str(folder))
        classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        vision = getattr(config, "vision_config", None) is not None
        auto = AutoModelForSequenceClassification if classifier else (
            AutoModelForImageTextToText if vision else AutoModelForCausalLM)
        with torch.device("meta"):  # a classic reward model is a sequence classifier
            model = auto.from_config(config)
    except Exception as e:  # an unknown model_type, a bad value in config.json
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:400]
        raise ConfigError(f"{key}: '{folder}/config.json' does not describe a causal LM transformers can build "
                          f"({type(e).__name__}: {detail})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = _weight_shapes(folder, key)
    if not set(found) & set(expected) and any(f"model.{k}" in expected for k in found):
        found = {f"model.{k}": v for k, v in found.items()}  # weights of the bare decoder (no "model." prefix)
    packed = getattr(config, "quantization_config", None) is not None  # quantized weights are stored packed
    for name, want in expected.items():  # in the model's order: the embedding before the layers and lm_head
        shape, file = found.get(name, (want, ""))
        if shape != want and not packed:
            raise ConfigError(f"{key}: '{folder}': tensor '{name}' in {file} has shape {_fmt(shape)} but config.json "
                              f"implies {_fmt(want)}: the config does not belong to these weights")
    layers = _layer_count({k: v for k, v in found.items() if "vision" not in k})
    n_config = getattr(getattr(config, "text_config", None) or config, "num_hidden_layers", None)
    # multi-token-prediction heads are stored as extra layers (DeepSeek-V3, GLM-4.5)
    extra = getattr(config, "num_nextn_predict_layers", 0) or getattr(config, "mtp_num_hidden_layers", 0) or 0
    if layers and isinstance(n_config, int) and not n_config <= layers <= n_config + extra:
        raise ConfigError(f"{key}: '{folder}': config.json has num_hidden_layers={n_config} but the weights hold "
                          f"{layers} layers")
    tied = getattr(config, "tie_word_embeddings", False) or getattr(getattr(config, "text_config", None),
                                                                    "tie_word_embeddings", False)
    if "lm_head.weight" in expected and "lm_head.weight" not in found and not tied and found:
        raise ConfigError(f"{key}: '{folder}': config.json has tie_word_embeddings=false but the weights hold no "
                          f"'lm_head.weight' (it would start random)")


def _layer_count(shapes: dict) -> int:
    """Decoder layers in the weights: 1 + the largest N of ``*.layers.N.*`` names (0 when none)."""
    import re

    found = [int(m.group(1)) for k in shapes if (m := re.search(r"(?:^|\.)layers\.(\d+)\.", k))]
    return max(found) + 1 if found else 0


def load_tokenizer(path: str | Path):
    """The folder's tokenizer; the built-in character tokenizer is loaded as saved (see tokenizer.py). A
    vision-language folder's tokenizer carries its ``image_layout`` (``models/vision.py``)."""
    from transformers import AutoTokenizer

    from kimi_rl.models.vision import attach_vision, is_vision_folder

    tok = load_char_tokenizer(path) if is_char_tokenizer_folder(path) else AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if is_vision_folder(path):  # prompts expand their <image> placeholders (data/prompts.py)
        attach_vision(tok, path)
    return tok


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """``tokenizer.save_pretrained(folder)``, plus a vision-language model's processor config (the image processor
    and the image block's length), so the folder is again a complete model folder."""
    tokenizer.save_pretrained(str(folder))
    processor = getattr(tokenizer, "processor_config", None)
    if processor is not None:
        (Path(folder) / "processor_config.json").write_text(json.dumps(processor, indent=2))


def model_class(path: str | Path):
    """The transformers auto class of a local folder: image-text-to-text for a vision-language model
    (``vision.is_vision_folder``), else causal LM."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from kimi_rl.models.vision import is_vision_folder

    return AutoModelForImageTextToText if is_vision_folder(path) else AutoModelForCausalLM


def load_model(path: str | Path, dtype: str = "float32"):
    """A causal LM (or a vision-language model: ``vision.is_vision_folder``) from a local folder, in training
    mode's dtype."""
    return model_class(path).from_pretrained(str(path), dtype=DTYPES[dtype])


def shifted_token_logprobs(logits, input_ids):
    """log p(x_t | x_<t) of each token from position 1 on: ``logits`` [B, T, V] -> [B, T-1] (float32), the one
    log-softmax-gather of the RL loss, the SFT loss and DPO's sequence log-probs."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, T-1, V]
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, T-1]


def eos_ids(tokenizer, model_config=None) -> list[int]:
    """All token ids that end a response (tokenizer eos and the model's eos list)."""
    ids = {tokenizer.eos_token_id}
    eos = getattr(model_config, "eos_token_id", None) if model_config is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(eos)
    return sorted(i for i in ids if i is not None)
