"""What every task provides: ``Problem`` (defined in ``kimi_rl.data.problem``, a leaf both the data readers and
the tasks import) and ``UNLABELLED``."""
from kimi_rl.data.problem import UNLABELLED, Problem

__all__ = ["UNLABELLED", "Problem"]
