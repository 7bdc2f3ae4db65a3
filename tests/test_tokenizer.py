from transformers import AutoTokenizer

from kimi_rl.tokenizer import CHARS, build_char_tokenizer


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
