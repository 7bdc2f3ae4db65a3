"""The built-in character-level tokenizer: one token per printable ASCII character.

Built with the ``tokenizers`` library and saved as a Hugging Face tokenizer folder, so
transformers and vLLM load it like any other.
"""
from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = [c for c in string.printable if c not in "\r\x0b\x0c"]  # 97 chars incl. \t \n space


def build_char_tokenizer():
    """A ``PreTrainedTokenizerFast`` over ``CHARS`` that prepends ``<bos>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=4096,
    )


def save_char_tokenizer(folder: Path):
    tok = build_char_tokenizer()
    tok.save_pretrained(str(folder))
    return tok
