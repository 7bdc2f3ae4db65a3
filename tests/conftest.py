"""Shared fixtures: tiny configs and model folders built from config (never downloaded)."""
from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped with a reason on CPU machines (``make gpu-check`` runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run by make gpu-check on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A freshly initialised 2-layer Qwen2 + character tokenizer HF folder."""
    from kimi_rl.config import ModelConfig
    from kimi_rl.models.modeling import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny_model")
    return build_tiny_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2,
                                        intermediate_size=128, max_position_embeddings=512), folder)


@pytest.fixture(scope="session")
def tiny_vl_dir(tmp_path_factory):
    """A freshly initialised tiny Idefics3 (2-layer text decoder, image encoder) HF folder with its processor."""
    from kimi_rl.config import ModelConfig
    from kimi_rl.models.modeling import build_tiny_model

    cfg = ModelConfig(arch="idefics3", hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2,
                      intermediate_size=128, max_position_embeddings=512)
    return build_tiny_model(cfg, tmp_path_factory.mktemp("tiny_vl"))
