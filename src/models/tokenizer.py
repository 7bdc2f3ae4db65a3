"""The built-in character-level tokenizer: one token per printable ASCII character.

Built with the ``tokenizers`` library and saved as a Hugging Face tokenizer folder, so
transformers and vLLM load it like any other.
"""
from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = [c for c in string.printable if c not in "\r\x0b\x0c"]  # 97 chars incl. \t \n space


MARKER = "kimi_rl_char_tokenizer"


def is_char_tokenizer_folder(folder: Path) -> bool:
    import json

    cfg = Path(folder) / "tokenizer_config.json"
    return cfg.is_file() and bool(json.loads(cfg.read_text()).get(MARKER))


def load_char_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))


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
    """Save the tokenizer so that ``AutoTokenizer`` reloads exactly it.

    transformers 5 picks Qwen2Tokenizer for a qwen2 model folder whatever the config says,
    and its pre-tokenizer drops spaces; ``load_char_tokenizer`` / ``modeling.load_tokenizer``
    see ``MARKER`` and load the saved tokenizer.json as it is."""
    import json

    tok = build_char_tokenizer()
    tok.save_pretrained(str(folder))
    cfg_path = Path(folder) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg[MARKER] = True
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return tok
