"""model.dtype: auto picks bf16 only where bf16 matmul is fast."""
from __future__ import annotations

from kimi_rl import hardware
from kimi_rl.config import ModelConfig


def test_auto_dtype_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("AMD EPYC", frozenset({"avx2", "fma"})))
    assert hardware.auto_dtype(cuda=False) == "float32"  # AVX2 only: bf16 would be emulated, ~40x slower
    assert hardware.auto_dtype(cuda=True) == "bfloat16"
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Intel Xeon", frozenset({"avx2", "avx512f", "avx512_bf16"})))
    assert hardware.auto_dtype(cuda=False) == "bfloat16"
    assert hardware.cpu_info()["flags"] == ["avx2", "avx512f", "avx512_bf16"]


def test_model_dtype_auto_is_resolved_in_the_config():
    assert ModelConfig(dtype="auto").dtype == hardware.auto_dtype()
    assert ModelConfig(dtype="float32").dtype == "float32"
