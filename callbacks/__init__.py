"""Lightning callbacks of the k1.5 recipe (``kimi_rl.callbacks``): thin adapters around the rollout worker
(``kimi_rl.rollout.worker``) and the run's checkpoints; the per-iteration schedule is ``kimi_rl.rl.schedule``."""
from kimi_rl.callbacks.checkpoint import IterationCheckpoint, SaveHFModel
from kimi_rl.callbacks.heldout_eval import HeldoutEval
from kimi_rl.callbacks.partial_rollout import PartialRollout
from kimi_rl.callbacks.progress import ProgressLog
from kimi_rl.callbacks.sample_logger import SampleLogger
from kimi_rl.callbacks.weight_sync import WeightSync

__all__ = ["HeldoutEval", "IterationCheckpoint", "PartialRollout", "ProgressLog", "SampleLogger", "SaveHFModel", "WeightSync"]
