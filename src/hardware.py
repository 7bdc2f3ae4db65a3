"""What this machine can do fast: the CPU's model and flags, and the dtype that suits it.

On a CPU without bf16 instructions (AVX2-only x86, e.g. AMD EPYC Milan) a bf16 matmul runs about 40x slower
than fp32, so ``model.dtype: auto`` (the default) picks bf16 only where it is fast.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
"""The flags that decide matmul speed per dtype."""

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""Any of these makes bf16 matmul fast on an x86 CPU."""


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_info() -> dict:
    """Model name, the relevant flags present and the core count (Linux /proc/cpuinfo; else platform)."""
    model, flags = _cpuinfo()
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags], "cores": os.cpu_count() or 1,
            "bf16_hardware": bool(BF16_FLAGS & flags)}


def auto_dtype(cuda: bool | None = None) -> str:
    """``bfloat16`` on a CUDA GPU or a CPU with bf16 instructions, else ``float32``."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return "bfloat16" if cuda or cpu_info()["bf16_hardware"] else "float32"
