"""The built-in visual task: read a column addition from an image, then add.

The image shows ``a`` over ``+b``, right-aligned as written by hand, rendered with Pillow in code; the question
text holds only the ``<image>`` placeholder, so the numbers must be read from the pixels. Difficulty level =
digits per operand. The long-CoT trace first reads the image cell by cell (``read _938+711``), then works the sum
as the arithmetic task's traces do (column sums, re-checks, corrections), ending in ``\\boxed{a+b}``.

A problem's images are ``problem_images(problem)``: rendered from ``meta["render"]`` (this task), or read from
``meta["images"]`` (paths or bytes: problem files with an image column, ``kimi_rl.data.images``).
"""
from __future__ import annotations

import functools
import random
from typing import Sequence

from kimi_rl.data.images import open_image
from kimi_rl.tasks.arithmetic import make_problems as arithmetic_problems
from kimi_rl.tasks.arithmetic import make_trace as arithmetic_trace
from kimi_rl.tasks.base import Problem

QUESTION = "<image>sum="
"""The prompt text of every visual problem: the image placeholder, then the cue to answer."""
IMAGE_SIZE = 64
"""Rendered images are IMAGE_SIZE x IMAGE_SIZE pixels (the tiny model's ``model.image_size``)."""


CELL = 16
"""Each character sits centred in its own CELL x CELL square of a 4 x 4 grid: one square per image token of the
tiny model (8 px patches merged 2 x 2), so reading the image is recognising one glyph per token."""


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=15)  # Pillow's bundled TrueType font (needs FreeType)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


@functools.lru_cache(maxsize=8192)
def render(a: int, b: int, size: int = IMAGE_SIZE):
    """``a`` over ``+b`` as a written column addition, black on white, one character per CELL-pixel square of the
    grid, right-aligned: a ``size`` x ``size`` RGB PIL image (operands of up to 3 digits). Cached: every rollout
    segment and every packed batch asks again for the image of each of a group's samples (never mutated)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    font = _font()
    cols = size // CELL
    for row, text in enumerate((str(a), f"+{b}")):
        for k, ch in enumerate(reversed(text)):
            x0, y0 = (cols - 1 - k) * CELL, row * CELL
            draw.text((x0 + CELL / 2, y0 + CELL / 2), ch, fill="black", font=font, anchor="mm")
    return img


class ImageError(ValueError):
    """A problem's image cannot be read (the message names the problem and the file)."""


def problem_images(problem: Problem) -> list:
    """The PIL images of ``problem``'s ``<image>`` placeholders, in order ([] for a text problem)."""
    meta = problem.meta
    if "render" in meta:
        a, b = meta["render"]
        return [render(int(a), int(b))]
    if "images" not in meta:
        return []
    from PIL import UnidentifiedImageError

    try:
        return [open_image(src) for src in meta["images"]]
    except (OSError, UnidentifiedImageError) as e:  # checked when the file was read: changed on disk since
        raise ImageError(f"problem {problem.uid}: cannot read its image ({type(e).__name__}: {e})") from None


def image_kwargs(problems: Sequence[Problem]) -> dict:
    """``{"images": [each problem's images]}`` for ``Engine.generate``, or {} when no problem has one (a text
    batch: engines that take no images are called as before)."""
    if not any("render" in p.meta or "images" in p.meta for p in problems):
        return {}
    return {"images": [problem_images(p) for p in problems]}


def make_problems(levels: list[int], train_per_level: int, heldout_per_level: int,
                  seed: int) -> tuple[list[Problem], list[Problem]]:
    """The arithmetic task's disjoint train / held-out pairs, each shown as an image instead of text."""
    train, heldout = arithmetic_problems(levels, train_per_level, heldout_per_level, seed)

    def visual(p: Problem) -> Problem:
        a, b = (int(x) for x in p.question.rstrip("=").split("+"))
        return Problem(uid=f"V{p.uid}", question=QUESTION, answer=p.answer, difficulty=p.difficulty,
                       meta={"render": (a, b)})

    return [visual(p) for p in train], [visual(p) for p in heldout]


TRACE_FORMAT = 2
"""Bumped when the trace changes (the cached warm-up of this task is keyed on it). 2: the read line transcribes
the grid cell by cell (was ``read a+b``, which the tiny model did not learn: README "Vision")."""


def transcribe(a: int, b: int) -> str:
    """The image's two rows as a transcription of its cells, left to right, ``_`` for an empty cell: character k
    is cell k of the grid (row-major), so reading is the same lookup for every image whatever the digit counts.

    >>> transcribe(938, 711), transcribe(7, 5)
    ('_938+711', '___7__+5')
    """
    cols = IMAGE_SIZE // CELL
    return str(a).rjust(cols, "_") + f"+{b}".rjust(cols, "_")


def make_trace(problem: Problem, rng: random.Random, max_rechecks: int, correction_prob: float) -> str:
    """``read`` + the image's cells (``transcribe``), then the arithmetic trace of ``a+b=``.

    >>> make_trace(Problem("x", QUESTION, "12", 1, {"render": (7, 5)}), random.Random(0), 0, 0.0)
    'read ___7__+5\\n7+5=12 c1\\nans 12\\n\\\\boxed{12}'
    """
    a, b = problem.meta["render"]
    return f"read {transcribe(a, b)}\n" + arithmetic_trace(f"{a}+{b}=", rng, max_rechecks, correction_prob)
