"""Many sandboxed runs at once: a thread per worker, each holding a slot (its own sandbox user when root).

The paper's sandbox serves many containers at once; threads suffice here, each waits on a child process.
"""
from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T, int], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(item, slot) for item in items]`` on up to ``workers`` threads, in order.

    No two concurrent calls share a ``slot`` (0 <= slot < workers), so per-slot sandbox users
    keep one run's fork bomb from using up another run's process limit.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(items) <= 1:
        return [fn(item, 0) for item in items]
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(workers):
        slots.put(slot)

    def call(item: T) -> R:
        slot = slots.get()
        try:
            return fn(item, slot)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="sandbox") as pool:
        return list(pool.map(call, items))
