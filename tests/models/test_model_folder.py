"""Model folders checked before training: config.json against the weights' shapes, without loading them."""
from __future__ import annotations

import json
import shutil

import pytest

from kimi_rl.config import ConfigError, ModelConfig
from kimi_rl.models.modeling import build_tiny_model, check_model_folder, model_context


@pytest.fixture
def folder(tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out)
    return out


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_good_folder_passes_and_reports_its_context(folder):
    assert check_model_folder(folder) == folder
    assert model_context(folder) == 512


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=128), r"tensor 'model\.embed_tokens\.weight' in model\.safetensors has shape \[101, 64\] but "
                            r"config\.json implies \[101, 128\]"),
    (dict(intermediate_size=256), r"tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' .* \[128, 64\] .* \[256, 64\]"),
    (dict(vocab_size=300), r"tensor 'model\.embed_tokens\.weight' .* implies \[300, 64\]"),
    (dict(num_hidden_layers=3, layer_types=["full_attention"] * 3),
     r"num_hidden_layers=3 but the weights hold 2 layers"),
    (dict(num_hidden_layers=1, layer_types=["full_attention"]), r"num_hidden_layers=1 but the weights hold 2 layers"),
    (dict(model_type="no_such_arch"), r"config\.json' does not describe a causal LM"),
])
def test_config_that_disagrees_with_the_weights_names_folder_and_tensor(folder, changes, message):
    _edit_config(folder, **changes)
    with pytest.raises(ConfigError, match=rf"^model\.path: '{folder}.*{message}") as err:
        check_model_folder(folder)
    assert "\n" not in str(err.value)


def test_truncated_or_garbage_weights(folder):
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"model\.safetensors' is truncated"):
        check_model_folder(folder)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match=r"is not a readable safetensors file"):
        check_model_folder(folder, key="LONG")


def test_missing_lm_head_of_an_untied_model_and_a_tied_model(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    del state["lm_head.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"tie_word_embeddings=false but the weights hold no 'lm_head\.weight'"):
        check_model_folder(folder)
    _edit_config(folder, tie_word_embeddings=True)
    check_model_folder(folder)


def test_cli_stops_before_building_anything(folder, tmp_path, capsys):
    from kimi_rl.cli import main

    _edit_config(folder, hidden_size=128)
    assert main(["train", f"model.path={folder}", "sft.enabled=false", f"run.dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kimi-rl: config error: model.path: '{folder}': tensor 'model.embed_tokens.weight'")
    assert not (tmp_path / "runs").exists()


def test_built_model_passes(tmp_path):
    out = build_tiny_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                       intermediate_size=64, max_position_embeddings=128, arch="llama"), tmp_path / "m")
    assert check_model_folder(out) == out and model_context(out) == 128
