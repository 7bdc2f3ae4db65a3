"""RecipeSchedule (src/rl/schedule.py): each iteration's length weight, response cap and long2short phase as a
pure function of the iteration number, on hand-computed numbers."""
from __future__ import annotations

import math

import pytest

from kimi_rl.config import Config, ConfigError, RolloutConfig
from kimi_rl.config.loader import load_config
from kimi_rl.rl.schedule import IterationSettings, RecipeSchedule, shortened


def weights(schedule: RecipeSchedule, n: int) -> list[float]:
    return [schedule.settings_at(t).len_reward_weight for t in range(n)]


def test_linear_ramp_after_warmup():
    # w(t) = 0.4 * min(1, (t - 1) / 4) from t = 1: 0, 0, 0.1, 0.2, 0.3, 0.4, 0.4
    s = RecipeSchedule(len_reward_weight=0.4, len_warmup_iterations=1, len_schedule="linear", len_ramp_iterations=4)
    assert weights(s, 7) == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.4])


def test_constant_weight_is_the_papers_off_then_on():
    s = RecipeSchedule(len_reward_weight=0.3, len_warmup_iterations=6)
    assert weights(s, 8) == [0.0] * 6 + [0.3, 0.3]
    assert not any(s.settings_at(t).long2short for t in range(8))


def test_long2short_phase_lowers_the_cap_and_sets_its_weight():
    s = RecipeSchedule(len_reward_weight=0.1, max_response_tokens=320, segment_tokens=100, long2short_at_iteration=2,
                       long2short_max_response_tokens=64, long2short_len_reward_weight=0.5)
    got = [s.settings_at(t) for t in range(4)]
    assert [(x.len_reward_weight, x.max_response_tokens, x.segment_tokens, x.long2short) for x in got] == [
        (0.1, 320, 100, False), (0.1, 320, 100, False), (0.5, 64, 64, True), (0.5, 64, 64, True)]
    assert got[3] == IterationSettings(3, 0.5, 64, 64, True)
    assert got[2].metrics() == {"algo/len_reward_weight": 0.5, "phase/long2short": 1.0,
                                "rollout/max_response_tokens": 64.0}


def test_the_phase_never_raises_the_cap_nor_a_smaller_segment():
    s = RecipeSchedule(max_response_tokens=48, segment_tokens=16, long2short_at_iteration=0,
                       long2short_max_response_tokens=500)
    assert (s.settings_at(0).max_response_tokens, s.settings_at(0).segment_tokens) == (48, 16)


def test_settings_are_a_pure_function_of_the_iteration():
    """No state: asking out of order, twice, or from a fresh object (a resumed run) gives the same answer."""
    make = lambda: RecipeSchedule(len_reward_weight=0.2, len_warmup_iterations=3, long2short_at_iteration=5)
    s = make()
    forward = [s.settings_at(t) for t in range(8)]
    assert [s.settings_at(t) for t in reversed(range(8))] == list(reversed(forward))
    assert make().settings_at(6) == forward[6]


def test_from_config_reads_the_documented_keys():
    cfg = load_config(["algo.len_reward_weight=0.2", "algo.len_warmup_iterations=3", "rollout.max_response_tokens=96",
                       "rollout.segment_tokens=32", "phase.long2short_at_iteration=7",
                       "phase.long2short_max_response_tokens=40", "phase.long2short_len_reward_weight=0.6"])
    assert RecipeSchedule.from_config(cfg) == RecipeSchedule(0.2, 3, "constant", 0, 96, 32, 7, 40, 0.6)
    assert RecipeSchedule.from_config(Config()).long2short_at_iteration is None


@pytest.mark.parametrize("kwargs, key", [
    ({"len_reward_weight": -0.1}, "algo.len_reward_weight"),
    ({"len_reward_weight": math.nan}, "algo.len_reward_weight"),
    ({"len_warmup_iterations": -1}, "algo.len_warmup_iterations"),
    ({"len_warmup_iterations": 1.5}, "algo.len_warmup_iterations"),
    ({"len_schedule": "cosine"}, "algo.len_schedule: 'cosine' is not one of constant, linear"),
    ({"len_schedule": "linear"}, "algo.len_ramp_iterations: must be an int >= 1"),
    ({"segment_tokens": 400}, "rollout.segment_tokens"),
    ({"long2short_at_iteration": -1}, "phase.long2short_at_iteration"),
    ({"long2short_at_iteration": True}, "phase.long2short_at_iteration"),
    ({"long2short_max_response_tokens": 0}, "phase.long2short_max_response_tokens"),
    ({"long2short_len_reward_weight": math.inf}, "phase.long2short_len_reward_weight"),
])
def test_bad_settings_name_the_config_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        RecipeSchedule(**kwargs)


def test_a_negative_iteration_is_refused():
    with pytest.raises(ValueError, match="iteration must be an int >= 0"):
        RecipeSchedule().settings_at(-1)


def test_shortened_lowers_cap_and_segment_never_raises():
    cfg = RolloutConfig(max_response_tokens=320, segment_tokens=100)
    short = shortened(cfg, 64)
    assert (short.max_response_tokens, short.segment_tokens) == (64, 64)
    assert shortened(RolloutConfig(max_response_tokens=320, segment_tokens=32), 64).segment_tokens == 32
    assert shortened(RolloutConfig(max_response_tokens=320), 64).segment_tokens is None
    assert shortened(short, 500) is short  # never raises the cap
    assert cfg.max_response_tokens == 320  # the original config is untouched
