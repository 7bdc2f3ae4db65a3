"""Lightning callbacks of the k1.5 recipe (``kimi_rl.callbacks``)."""
from kimi_rl.callbacks.checkpoint import IterationCheckpoint, SaveHFModel
from kimi_rl.callbacks.heldout_eval import HeldoutEval
from kimi_rl.callbacks.length_penalty import LengthPenaltySchedule
from kimi_rl.callbacks.long2short_phase import Long2ShortPhase
from kimi_rl.callbacks.partial_rollout import PartialRollout
from kimi_rl.callbacks.sample_logger import SampleLogger
from kimi_rl.callbacks.weight_sync import WeightSync

__all__ = ["HeldoutEval", "IterationCheckpoint", "LengthPenaltySchedule", "Long2ShortPhase", "PartialRollout", "SampleLogger", "SaveHFModel",
           "WeightSync"]
