"""Turn problems into prompt token ids (template, then the chat template when there is one)."""
from __future__ import annotations

from typing import Sequence

from kimi_rl.config import DataConfig
from kimi_rl.tasks.base import Problem


def prompt_text(problem: Problem, data: DataConfig) -> str:
    return data.prompt_template.format(question=problem.question)


def encode_prompts(problems: Sequence[Problem], tokenizer, data: DataConfig) -> list[list[int]]:
    """Prompt token ids per problem; chat-formatted when the tokenizer has a chat template
    and ``data.use_chat_template`` (the built-in character tokenizer has none)."""
    texts = [prompt_text(p, data) for p in problems]
    if data.use_chat_template and getattr(tokenizer, "chat_template", None):
        out = []
        for t in texts:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            out.append(list(ids))
        return out
    return [list(ids) for ids in tokenizer(texts)["input_ids"]]
