"""Rollout engines by name (``rollout.engine``): vLLM in-process, or transformers ``generate``.

Both are imported lazily, so vLLM loads only when chosen; both record the raw (temperature-1)
log-prob of each sampled token as logp_old.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Protocol

from kimi_rl.config import ModelConfig, RolloutConfig
from kimi_rl.registries import ENGINES
from kimi_rl.rollout.types import Engine


class EngineError(RuntimeError):
    """A rollout engine could not be imported or started."""


class EngineFactory(Protocol):
    """What a registered engine class offers: one constructor signature for all engines."""

    def from_config(
        self, cfg: RolloutConfig, model_dir: Path, model_cfg: ModelConfig, seed: int, max_model_len: int,
        device: str | None = None,
    ) -> Engine: ...




def _fallback_hint(name: str, error: BaseException | None = None) -> str:
    """Suggest the transformers engine, except for a prompt too long for the model, where it fails too
    (and, without vLLM's paged KV cache, takes far more memory on the way)."""
    text = str(error or "").lower()
    if name == "hf" or any(w in text for w in ("max_model_len", "context length", "too long")):
        return ""
    return " Set rollout.engine=hf to sample with transformers generate instead."


def build_engine(
    cfg: RolloutConfig, model_dir: Path, model_cfg: ModelConfig, seed: int, max_model_len: int,
    device: str | None = None,
) -> Engine:
    """The engine named by ``cfg.engine`` on the HF folder ``model_dir``, ready to ``generate``.

    ``device``: this rank's device (the strategy's root device) for engines that take one (hf); None: the
    first GPU if there is one, else the CPU. vLLM places itself on the current CUDA device.

    Raises ``EngineError`` (with the fallback to ``hf``) when the backend cannot be imported or
    started; an unknown name raises the registry's KeyError listing the valid ones.
    """
    try:
        factory = ENGINES.get(cfg.engine)
    except ImportError as e:
        raise EngineError(
            f"rollout.engine={cfg.engine}: cannot import its backend ({e}).{_fallback_hint(cfg.engine)}"
        ) from e
    try:
        return factory.from_config(cfg, Path(model_dir), model_cfg, seed, max_model_len, device)
    except Exception as e:
        raise EngineError(
            f"rollout.engine={cfg.engine}: the engine did not start on '{model_dir}' "
            f"({type(e).__name__}: {e}).{_fallback_hint(cfg.engine, e)}"
        ) from e


@contextlib.contextmanager
def open_engine(
    cfg: RolloutConfig, model_dir: Path, model_cfg: ModelConfig, seed: int, max_model_len: int,
    device: str | None = None,
) -> Iterator[Engine]:
    """``build_engine`` for the body of a ``with`` block, closed on the way out (also on an error)."""
    engine = build_engine(cfg, model_dir, model_cfg, seed, max_model_len, device)
    try:
        yield engine
    finally:
        engine.close()
