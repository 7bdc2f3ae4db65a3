"""Shared fixtures: tiny configs and model folders built from config (never downloaded)."""
from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


# Files whose tests run programs in the code sandbox as its slot users (uid_base + slot, as root): under
# `make test`'s pytest-xdist workers one worker runs them all, one at a time, so no two of them run programs as
# the same user at once (a run kills its user's leftovers). test_sandbox, which asserts its users own no process
# after a run, has users of its own: the others' runs leave zombies that the host's init reaps in its own time.
SANDBOX_FILES = ("sandbox/test_sandbox.py", "rewards/test_code_reward.py", "rewards/test_hostile_code.py",
                 "tasks/test_make_tests.py", "tasks/test_code_tasks.py", "bench/test_bench.py", "eval/test_evaluate.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist hands out whole test files, and ``SANDBOX_FILES`` as one unit, in the collection order: each worker
    runs a subsequence of the serial run's order, each file's tests together and in their order (module-scoped
    engines built once; no test sees a file that a serial run puts after it). Handing out single tests broke
    tests/rollout/test_engines.py's vLLM log-prob checks once in three runs (another file's test ran between
    them). Not ``--dist loadgroup``: under pytest 9.2 the group suffix xdist 3.8 writes into ``item._nodeid``
    never reaches the node id, so its groups are ignored."""
    from xdist.scheduler import LoadScopeScheduling

    sandbox_files = {f"tests/{name}" for name in SANDBOX_FILES}
    config.option.loadscopereorder = False  # the collection order, not the largest units first

    class FilesAndSandboxTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return "sandbox" if path in sandbox_files else path

    return FilesAndSandboxTogether(config, log)


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
