"""Shared fixtures: tiny configs and model folders built from config (never downloaded)."""
from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


# Files whose tests run programs in the code sandbox as its slot users (uid_base + slot, as root): under
# `make test`'s pytest-xdist workers one worker runs them all, one at a time, so no two of them run programs as
# the same user at once (a run kills its user's leftovers; test_sandbox asserts the users own none after).
SANDBOX_FILES = ("sandbox/test_sandbox.py", "rewards/test_code_reward.py", "rewards/test_hostile_code.py",
                 "tasks/test_make_tests.py", "tasks/test_code_tasks.py", "bench/test_bench.py", "eval/test_evaluate.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's load balancing, test by test, but the tests of ``SANDBOX_FILES`` form one unit (one worker).
    (Not ``--dist loadgroup``: its group suffix on node ids does not reach the scheduler under pytest 9.2.)"""
    from xdist.scheduler import LoadScopeScheduling

    sandbox_files = {f"tests/{name}" for name in SANDBOX_FILES}

    class SandboxFilesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "sandbox" if nodeid.split("::")[0] in sandbox_files else nodeid

    return SandboxFilesTogether(config, log)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped with a reason on CPU machines (``make gpu-check`` runs them).
    Under xdist the ``slow`` end-to-end tests are handed out first, so no worker starts one near the end."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: "slow" not in item.keywords)  # stable: the same order on every worker
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run by make gpu-check on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _threads():
    """Two threads, or the cores shared out among `make test`'s xdist workers (oversubscribed OpenMP crawls)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))


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
