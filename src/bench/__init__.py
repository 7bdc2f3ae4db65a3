"""``kimi-rl bench``: the project's benchmarks in one run (figures, never pass/fail on a time).

Partial vs full rollouts (``kimi_rl.bench.rollout``, paper 2.6.2) and sandbox starts per second
(``kimi_rl.bench.sandbox``, 2.6.4). Settings are the ``bench.*`` section of the config
(``kimi-rl bench bench.segment_tokens=16 bench.sandbox_runs=20``).
"""
from __future__ import annotations

from typing import Optional, Sequence
from kimi_rl.bench import rollout as bench_rollout, sandbox as sandbox_bench
from kimi_rl.config.loader import load_config


def main(overrides: Optional[Sequence[str]] = None) -> int:
    """Run both benchmarks and print their tables; the exit status is the worse of the two."""
    opts = load_config(list(overrides or [])).bench
    print("== rollouts: partial vs full (paper 2.6.2)", flush=True)
    status = bench_rollout.run(opts)
    print("\n== code sandbox: executions per second (paper 2.6.4)", flush=True)
    return max(status, sandbox_bench.run(opts.sandbox_runs, opts.sandbox_workers, opts.sandbox_backends))


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
