from transformers import AutoTokenizer

from kimi_rl.models.tokenizer import CHARS, build_char_tokenizer


def test_round_trip_through_saved_folder(tmp_path):
    tok = build_char_tokenizer()
    text = "37+48=\n7+8=15 c1\ncheck\n\\boxed{85} ok ~!@#"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1  # one token per character
    assert tok.decode(ids, skip_special_tokens=True) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == ids
    assert again.decode(ids + [again.eos_token_id], skip_special_tokens=True) == text
    assert (again.pad_token_id, again.bos_token_id, again.eos_token_id) == (0, 1, 2)


def test_every_char_has_its_own_token():
    tok = build_char_tokenizer()
    ids = tok("".join(CHARS), add_special_tokens=False)["input_ids"]
    assert len(set(ids)) == len(CHARS) and tok.unk_token_id not in ids
    assert tok("\u00e9", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_load_tokenizer_keeps_the_char_tokenizer_of_a_qwen2_folder(tiny_model_dir):
    """AutoTokenizer swaps in Qwen2's pre-tokenizer for qwen2 folders (drops spaces); ours must not."""
    from kimi_rl.models.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    text = "7+8=15 c1\nans 15"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text) + 1
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_char_tokenizer_survives_save_policy(tiny_model_dir, tmp_path):
    from kimi_rl.models.modeling import load_model, load_tokenizer
    from kimi_rl.pipeline import save_policy
    from kimi_rl.models.tokenizer import is_char_tokenizer_folder

    out = tmp_path / "m"
    save_policy(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), out, True)
    assert is_char_tokenizer_folder(out)
    assert load_tokenizer(out)("a b")["input_ids"] == [1, 14, 98, 15]
