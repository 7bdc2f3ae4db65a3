"""Images of problem rows: what an image cell of a problem file may hold, the checks each image passes when the
file is read (before any training), and the decoded PIL image a rollout or a warm-up batch takes.

Not from the paper (k1.5 trains on real-world, synthetic and text-rendered visual problems; its data format is not
published). A cell (``data.image_field``, default ``image``) holds one image or a list of them, each:

- a path, absolute or relative to the problem file's folder;
- a ``data:image/...;base64,...`` URI (JSON / JSONL rows carry bytes this way);
- raw bytes (a Parquet binary column);
- ``{"bytes": ..., "path": ...}`` (a Hugging Face ``datasets`` Image column written to Parquet): the bytes when
  present, else the path.

Each ``<image>`` in the question marks where an image goes, in order; a question with none gets them all in front
(as vision-language chat templates put them). Pillow is imported on use: text-only runs never load it.
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
from pathlib import Path
from typing import Any

PLACEHOLDER = "<image>"
"""Where an image goes in a question's text (the vision-language tokenizer's image token)."""

class BadImage(ValueError):
    """What is wrong with a row's image: ``reason`` is the short kind (counted per reason), the message says more."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _one(value: Any, field: str, folder: Path) -> str | bytes:
    """One image cell value as an absolute path or encoded bytes (not yet opened)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path") is not None:
            value = value["path"]
        else:
            raise BadImage("bad image field", f"field '{field}': an image object needs 'bytes' or 'path', got keys "
                                              f"{sorted(map(str, value))}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.startswith("data:"):
            head, _, payload = text.partition(",")
            if not head.endswith(";base64"):
                raise BadImage("bad image field", f"field '{field}': a data URI must be base64 ('data:image/png;"
                                                  f"base64,...'), got '{head[:40]}'")
            try:
                return base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as e:
                raise BadImage("bad image field", f"field '{field}': bad base64 in the data URI ({e})") from None
        path = Path(text).expanduser()
        return str(path if path.is_absolute() else folder / path)
    raise BadImage("bad image field", f"field '{field}' must be an image path, a base64 data URI, bytes, or a list "
                                      f"of them, got {type(value).__name__}")


def _name(src: str | bytes) -> str:
    return f"'{src}'" if isinstance(src, str) else f"the {len(src)} bytes"


def _open(src: str | bytes):
    """``PIL.Image.open`` of a path or of encoded bytes (lazy: the header only)."""
    from PIL import Image

    return Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)


def check_image(src: str | bytes, field: str, sides: tuple[int, int]) -> tuple[int, int]:
    """Decode ``src`` fully (a truncated file fails here, not in a rollout) and check that both sides lie in
    ``sides`` = (min, max) pixels; returns (width, height)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(src, str) and not Path(src).is_file():
        raise BadImage("image file missing", f"field '{field}': image file '{src}' does not exist")
    try:
        with _open(src) as img:
            img.load()
            size = img.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage("image unreadable", f"field '{field}': cannot read {_name(src)} as an image "
                                           f"({type(e).__name__}: {e})") from None
    low, high = sides
    if min(size) < low:
        raise BadImage("image too small", f"field '{field}': {_name(src)} is {size[0]}x{size[1]} pixels; each side "
                                          f"must be at least {low} (data.image_min_side)")
    if max(size) > high:
        raise BadImage("image too large", f"field '{field}': {_name(src)} is {size[0]}x{size[1]} pixels; each side "
                                          f"must be at most {high} (data.image_max_side)")
    return size


def row_images(value: Any, question: str, field: str, folder: Path,
               sides: tuple[int, int]) -> tuple[list[str | bytes], str]:
    """A row's image cell checked: (its images as absolute paths or bytes, the question with one ``<image>`` per
    image). Raises BadImage naming what is wrong."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise BadImage("bad image field", f"field '{field}' is an empty list")
    images = [_one(v, field, folder) for v in values]
    for src in images:
        check_image(src, field, sides)
    marks = question.count(PLACEHOLDER)
    if marks == 0:
        return images, PLACEHOLDER * len(images) + question
    if marks != len(images):
        raise BadImage("image placeholders do not match the images",
                       f"the question has {marks} '{PLACEHOLDER}' but field '{field}' has {len(images)} image(s)")
    return images, question


@functools.lru_cache(maxsize=256)
def open_image(src: str | bytes):
    """The RGB PIL image of a checked source (cached: each sample of a group and each rollout segment asks again;
    never mutated by callers)."""
    with _open(src) as img:
        return img.convert("RGB")
