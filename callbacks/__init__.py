"""Lightning callbacks of the k1.5 recipe (``kimi_rl.callbacks``)."""
from kimi_rl.callbacks.length_penalty import LengthPenaltySchedule

__all__ = ["LengthPenaltySchedule"]
