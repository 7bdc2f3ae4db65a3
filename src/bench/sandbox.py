"""Benchmark: sandboxed executions per second of a trivial program, per backend, next to the paper's figures.

k1.5 (section 2.6.4) reports 120 container starts/s on 16 cores for its sandbox and 27/s for Docker.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from kimi_rl.sandbox import SANDBOXES, Limits, SandboxUnavailable, make_sandbox, parallel_map
from kimi_rl.sandbox.process import execute, resolve_python

PAPER = {"k1.5 sandbox": 120.0, "Docker": 27.0}
"""Starts per second reported in the paper, both on 16 cores."""
PAPER_CORES = 16
TRIVIAL = "print(1)\n"


@dataclass(frozen=True)
class BenchRow:
    name: str
    runs: int
    seconds: float
    failures: int
    note: str = ""

    @property
    def per_s(self) -> float:
        return self.runs / self.seconds if self.seconds > 0 else 0.0


def time_runs(name: str, run_one: Callable[[int], bool], runs: int, workers: int, note: str = "") -> BenchRow:
    """Wall time of ``runs`` calls of ``run_one(slot)`` on ``workers`` threads (after 2 warm-up calls)."""
    for _ in range(2):
        run_one(0)
    start = time.perf_counter()
    ok = parallel_map(lambda _, slot: run_one(slot), range(runs), workers)
    return BenchRow(name, runs, time.perf_counter() - start, failures=ok.count(False), note=note)


def bench_backend(name: str, runs: int, workers: int) -> BenchRow:
    try:
        sandbox = make_sandbox(name)
    except SandboxUnavailable as err:
        return BenchRow(name, 0, 0.0, 0, note=f"unavailable: {err}")
    argv = [sandbox.python, "-I", "-S", "main.py"]

    def one(slot: int) -> bool:
        result = sandbox.run({"main.py": TRIVIAL}, argv, b"", Limits(), slot)
        return result.ok and result.stdout == "1\n"

    return time_runs(name, one, runs, workers, note=sandbox.isolation.summary())


def bench_unsandboxed(runs: int, workers: int) -> BenchRow:
    """The same program as a bare subprocess (no limits, no isolation): the floor the backends add to."""
    python = resolve_python(None, other_user=False)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "main.py").write_text(TRIVIAL)

        def one(_slot: int) -> bool:
            return execute([python, "-I", "-S", "main.py"], cwd=Path(tmp), stdin=b"", limits=Limits()).ok

        return time_runs("bare subprocess", one, runs, workers, note="no sandbox (reference)")


def format_table(rows: Sequence[BenchRow], cores: int) -> str:
    """Executions/s and per core, with ratios to the paper's figures (normalised per core too)."""
    lines = [f"{'':24}{'runs/s':>9}{'per core':>10}{'/ k1.5 120':>12}{'/ Docker 27':>13}"
             f"{'per-core / k1.5':>17}{'per-core / Docker':>19}"]
    paper_rows = [BenchRow(f"paper: {k}", int(v), 1.0, 0) for k, v in PAPER.items()]
    for row in list(rows) + paper_rows:
        row_cores = PAPER_CORES if row.name.startswith("paper") else cores
        if row.runs == 0:
            lines.append(f"{row.name:24}  {row.note}")
            continue
        per_core = row.per_s / row_cores
        lines.append(
            f"{row.name:24}{row.per_s:9.1f}{per_core:10.2f}{row.per_s / PAPER['k1.5 sandbox']:12.2f}"
            f"{row.per_s / PAPER['Docker']:13.2f}{per_core / (PAPER['k1.5 sandbox'] / PAPER_CORES):17.2f}"
            f"{per_core / (PAPER['Docker'] / PAPER_CORES):19.2f}"
            + (f"  ({row.failures} failed)" if row.failures else ""))
    return "\n".join(lines)


def run(runs: int = 200, workers: int = 0, backends: Sequence[str] = ()) -> int:
    """Time ``runs`` executions on each of ``backends`` ([]: every registered one) with ``workers`` at once
    (0: one per core); prints the table; exit status 1 when any execution failed."""
    cores = os.cpu_count() or 1
    workers = workers or cores
    backends = list(backends) or SANDBOXES.names()
    rows = [bench_unsandboxed(runs, workers)]
    rows += [bench_backend(name, runs, workers) for name in backends]
    print(f"Sandboxed executions of a trivial Python program ({runs} runs, {workers} workers, "
          f"{cores} cores here; the paper's figures are for 16 cores):")
    print(format_table(rows, cores))
    for row in rows[1:]:
        if row.runs:
            print(f"  {row.name}: {row.note}")
    return 0 if all(r.failures == 0 for r in rows) else 1


if __name__ == "__main__":
    import sys

    from kimi_rl.config.loader import load_config

    opts = load_config(sys.argv[1:]).bench
    raise SystemExit(run(opts.sandbox_runs, opts.sandbox_workers, opts.sandbox_backends))
