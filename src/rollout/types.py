"""Data passed between engines, the partial-rollout buffer, rewards and the loss."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch

from kimi_rl.tasks.base import Problem

FINISH_REASONS = ("stop", "length", "repeat")


@dataclass
class Generation:
    """One sampled continuation from an engine call."""

    token_ids: list[int]
    """New tokens only (never the prompt)."""
    logprobs: list[float]
    """Log-prob of each sampled token under the engine's weights at sampling time; NaN for every token when the
    call did not ask for them (``Engine.generate(logprobs=False)``)."""
    finish_reason: str
    """stop (eos) | length (the call's token budget ran out)."""


class Engine(Protocol):
    """A rollout engine: vLLM or transformers behind the same small interface."""

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int | list[int], n: int, temperature: float, top_p: float,
        images: list[list] | None = None, logprobs: bool = True,
    ) -> list[list[Generation]]:
        """``n`` samples for each prompt (token ids); result[i][j] is sample j of prompt i.

        ``max_new_tokens`` may give one budget per prompt. ``logprobs`` False lets the engine skip the sampled tokens' log-probs (NaN in ``Generation.logprobs``); the tokens sampled are
        the same either way. ``images[i]`` (a vision-language model): the PIL images
        of prompt i's expanded ``<image>`` blocks, in order (``kimi_rl.models.vision``)."""

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the engine's weights in place with a HF-named full state dict."""

    def sleep(self) -> None:
        """Free accelerator memory while training runs (no-op where unsupported)."""

    def wake_up(self) -> None:
        """Undo ``sleep`` before the next rollout."""

    def close(self) -> None:
        """Free the engine's memory (and any process group it created); the engine is unusable afterwards."""


@dataclass
class Trajectory:
    """One of a group's k samples, possibly produced over several iterations (segments)."""

    group_id: str
    """Id of the prompt's group (problem uid + the iteration the prompt was drawn)."""
    problem: Problem
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    """logp_old of each response token, recorded when it was sampled."""
    versions: list[int] = field(default_factory=list)
    """Policy version (iteration) that sampled each response token."""
    finish_reason: Optional[str] = None
    """None while unfinished; then stop | length | repeat."""
    reward: float = 0.0
    correct: bool = False

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def segments(self) -> int:
        """Number of iterations that contributed tokens."""
        return len(set(self.versions))


@dataclass
class Group:
    """The k trajectories of one prompt; trained on only once all are finished."""

    group_id: str
    problem: Problem
    trajectories: list[Trajectory]

    @property
    def finished(self) -> bool:
        return all(t.finished for t in self.trajectories)
