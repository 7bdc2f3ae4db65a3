"""Turn problems into prompt token ids with ``data.prompt_template`` (and the chat template)."""
from __future__ import annotations

from typing import Sequence

from kimi_rl.config import DataConfig
from kimi_rl.data.prompts import build_prompt
from kimi_rl.tasks.base import Problem


def encode_prompts(problems: Sequence[Problem], tokenizer, data: DataConfig) -> list[list[int]]:
    """Prompt token ids per problem; chat-formatted when the tokenizer has a chat template
    and ``data.use_chat_template`` (the built-in character tokenizer has none)."""
    return [build_prompt(p.question, data.prompt_template, tokenizer, data.use_chat_template) for p in problems]
