"""What changes from one RL iteration to the next, as one pure function of the iteration number.

``RecipeSchedule.settings_at(t)`` gives iteration ``t``'s length-reward weight (paper 2.3.3: off during a
warm-up, then on), its response cap and partial-rollout segment, and whether it is a long2short RL
iteration (paper 2.4: from ``phase.long2short_at_iteration`` on, a much smaller cap and a fixed length
weight). No callback mutates another: the rollout callback asks the schedule with the module's
iteration, so a resumed run (whose iteration comes from the checkpoint) gets exactly the settings an
uninterrupted run had. The curriculum stage is the sampler's own function of the same number
(``kimi_rl.rl.sampling.stage_at``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from kimi_rl.config import Config, ConfigError, RolloutConfig
from kimi_rl.rewards.length import LENGTH_SCHEDULES, length_weight


@dataclass(frozen=True)
class IterationSettings:
    """The settings of one RL iteration (``RecipeSchedule.settings_at``)."""

    iteration: int
    len_reward_weight: float
    """Weight of k1.5's length reward in this iteration's rewards."""
    max_response_tokens: int
    """Longest response; a trajectory cut there is scored wrong."""
    segment_tokens: Optional[int]
    """Partial rollouts: most new tokens per trajectory in this iteration (None: to the end)."""
    long2short: bool
    """Whether this is a long2short RL iteration (paper 2.4)."""

    def metrics(self) -> dict[str, float]:
        """The settings as TensorBoard scalars."""
        return {"algo/len_reward_weight": float(self.len_reward_weight), "phase/long2short": float(self.long2short),
                "rollout/max_response_tokens": float(self.max_response_tokens)}


def shortened(cfg: RolloutConfig, max_response_tokens: int) -> RolloutConfig:
    """``cfg`` with the response cap lowered to ``max_response_tokens`` (never raised); a partial-rollout
    ``segment_tokens`` above the new cap is lowered with it, so the config stays valid (long2short RL as a
    separate run: ``kimi_rl.long2short.stages``)."""
    cap, segment = _short_cap(cfg.max_response_tokens, cfg.segment_tokens, max_response_tokens)
    if cap == cfg.max_response_tokens and segment == cfg.segment_tokens:
        return cfg
    return dataclasses.replace(cfg, max_response_tokens=cap, segment_tokens=segment)


def _short_cap(cap: int, segment: Optional[int], short: int) -> tuple[int, Optional[int]]:
    new_cap = min(cap, short)
    return new_cap, None if segment is None else min(segment, new_cap)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _weight(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class RecipeSchedule:
    """The per-iteration settings of a run; each field is the config key named in its error message.

    >>> s = RecipeSchedule(len_reward_weight=0.4, len_warmup_iterations=1, len_schedule="linear",
    ...                    len_ramp_iterations=2, long2short_at_iteration=4, long2short_max_response_tokens=16)
    >>> [(x.len_reward_weight, x.max_response_tokens) for x in map(s.settings_at, range(6))]
    [(0.0, 320), (0.0, 320), (0.2, 320), (0.4, 320), (0.5, 16), (0.5, 16)]
    """

    len_reward_weight: float = 0.0
    """``algo.len_reward_weight``: the length reward's weight once on."""
    len_warmup_iterations: int = 0
    """``algo.len_warmup_iterations``: iterations with the weight at 0."""
    len_schedule: str = "constant"
    """``algo.len_schedule``: constant | linear (0 to the weight over ``len_ramp_iterations``)."""
    len_ramp_iterations: int = 0
    """``algo.len_ramp_iterations``."""
    max_response_tokens: int = 320
    """``rollout.max_response_tokens``."""
    segment_tokens: Optional[int] = None
    """``rollout.segment_tokens``."""
    long2short_at_iteration: Optional[int] = None
    """``phase.long2short_at_iteration``: the first long2short RL iteration (None: never)."""
    long2short_max_response_tokens: int = 160
    """``phase.long2short_max_response_tokens``: the phase's response cap (never above the run's)."""
    long2short_len_reward_weight: float = 0.5
    """``phase.long2short_len_reward_weight``: the phase's length weight, on from its first iteration."""

    def __post_init__(self) -> None:
        def bad(key: str, rule: str, value: object) -> ConfigError:
            return ConfigError(f"{key}: must be {rule}, got {value!r}")

        if not _weight(self.len_reward_weight):
            raise bad("algo.len_reward_weight", "a finite number >= 0", self.len_reward_weight)
        if not _int(self.len_warmup_iterations) or self.len_warmup_iterations < 0:
            raise bad("algo.len_warmup_iterations", "an int >= 0", self.len_warmup_iterations)
        if self.len_schedule not in LENGTH_SCHEDULES:
            raise ConfigError(f"algo.len_schedule: '{self.len_schedule}' is not one of {', '.join(LENGTH_SCHEDULES)}")
        least_ramp = 1 if self.len_schedule == "linear" else 0
        if not _int(self.len_ramp_iterations) or self.len_ramp_iterations < least_ramp:
            raise bad("algo.len_ramp_iterations", f"an int >= {least_ramp} for algo.len_schedule "
                                                  f"'{self.len_schedule}'", self.len_ramp_iterations)
        if not _int(self.max_response_tokens) or self.max_response_tokens < 1:
            raise bad("rollout.max_response_tokens", "an int >= 1", self.max_response_tokens)
        if self.segment_tokens is not None and (not _int(self.segment_tokens)
                                                or not 1 <= self.segment_tokens <= self.max_response_tokens):
            raise bad("rollout.segment_tokens", f"null or an int in [1, rollout.max_response_tokens="
                                                f"{self.max_response_tokens}]", self.segment_tokens)
        if self.long2short_at_iteration is not None and (not _int(self.long2short_at_iteration)
                                                         or self.long2short_at_iteration < 0):
            raise bad("phase.long2short_at_iteration", "null or an int >= 0", self.long2short_at_iteration)
        if not _int(self.long2short_max_response_tokens) or self.long2short_max_response_tokens < 1:
            raise bad("phase.long2short_max_response_tokens", "an int >= 1", self.long2short_max_response_tokens)
        if not _weight(self.long2short_len_reward_weight):
            raise bad("phase.long2short_len_reward_weight", "a finite number >= 0", self.long2short_len_reward_weight)

    @classmethod
    def from_config(cls, cfg: Config) -> "RecipeSchedule":
        a, r, p = cfg.algo, cfg.rollout, cfg.phase
        return cls(a.len_reward_weight, a.len_warmup_iterations, a.len_schedule, a.len_ramp_iterations,
                   r.max_response_tokens, r.segment_tokens, p.long2short_at_iteration,
                   p.long2short_max_response_tokens, p.long2short_len_reward_weight)

    def in_long2short(self, iteration: int) -> bool:
        """Whether ``iteration`` is a long2short RL iteration."""
        return self.long2short_at_iteration is not None and iteration >= self.long2short_at_iteration

    def settings_at(self, iteration: int) -> IterationSettings:
        """Iteration ``iteration``'s settings (0-based). In the long2short phase the cap is lowered to
        ``long2short_max_response_tokens`` (never raised) and a segment above it is lowered with it."""
        if not _int(iteration) or iteration < 0:
            raise ValueError(f"settings_at: iteration must be an int >= 0, got {iteration!r}")
        if not self.in_long2short(iteration):
            weight = length_weight(iteration, self.len_reward_weight, self.len_warmup_iterations, self.len_schedule,
                                   self.len_ramp_iterations)
            return IterationSettings(iteration, weight, self.max_response_tokens, self.segment_tokens, False)
        cap, segment = _short_cap(self.max_response_tokens, self.segment_tokens, self.long2short_max_response_tokens)
        return IterationSettings(iteration, self.long2short_len_reward_weight, cap, segment, True)
