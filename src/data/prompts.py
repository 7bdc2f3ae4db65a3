"""One question as prompt token ids: the prompt template, then the tokenizer's chat template.

Not from the paper (its prompts are unpublished); the same builder serves RL and evaluation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # kimi_rl.config imports this package's siblings: annotations only
    from kimi_rl.config import DataConfig
    from kimi_rl.tasks.base import Problem


def build_prompt(question: str, template: str, tokenizer, use_chat_template: bool = True) -> list[int]:
    """Token ids of ``template.format(question=question)``, wrapped as one user turn with the
    tokenizer's chat template (generation prompt added) when it has one and ``use_chat_template``.

    Literal braces in ``template`` must be doubled: ``"{question} Answer in \\\\boxed{{}}."``.

    A vision-language model's tokenizer (``load_tokenizer`` sets its ``image_layout``) gets each ``<image>``
    placeholder expanded to the image's token block, as the model's forward takes it.
    """
    try:
        text = template.format(question=question)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"prompt template {template!r} does not format with only {{question}} ({err!r}); "
            "double literal braces, e.g. \\boxed{{}}"
        ) from None
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        # Render to text, then tokenize without extra specials: the template writes its own.
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    else:
        ids = list(tokenizer(text)["input_ids"])
    layout = getattr(tokenizer, "image_layout", None)
    return layout.expand(ids) if layout is not None else ids


def encode_prompts(problems: Sequence["Problem"], tokenizer, data: "DataConfig") -> list[list[int]]:
    """Prompt token ids per problem; chat-formatted when the tokenizer has a chat template
    and ``data.use_chat_template`` (the built-in character tokenizer has none)."""
    return [build_prompt(p.question, data.prompt_template, tokenizer, data.use_chat_template) for p in problems]
