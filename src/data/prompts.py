"""One question as prompt token ids: the prompt template, then the tokenizer's chat template.

Not from the paper (its prompts are unpublished); the same builder serves RL and evaluation.
"""
from __future__ import annotations


def build_prompt(question: str, template: str, tokenizer, use_chat_template: bool = True) -> list[int]:
    """Token ids of ``template.format(question=question)``, wrapped as one user turn with the
    tokenizer's chat template (generation prompt added) when it has one and ``use_chat_template``.

    Literal braces in ``template`` must be doubled: ``"{question} Answer in \\\\boxed{{}}."``.
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
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])
