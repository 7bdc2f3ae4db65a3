"""``kimi-rl bench``: the project's benchmarks in one run (figures, never pass/fail on a time).

Each RL stage against its ceiling on this machine (``kimi_rl.bench.ceilings``: matmul peak, the engine alone,
shares of an iteration), partial vs full rollouts (``kimi_rl.bench.rollout``, paper 2.6.2) and sandbox starts per
second (``kimi_rl.bench.sandbox``, 2.6.4). Settings are the ``bench.*`` section of the config
(``kimi-rl bench bench.segment_tokens=16 bench.sandbox_runs=20``).
"""
from __future__ import annotations

from typing import Optional, Sequence


def main(overrides: Optional[Sequence[str]] = None) -> int:
    """Run the benchmarks and print their tables; the exit status is the worse of the rollout and sandbox ones."""
    # imported here, not at the top: the preload children (python -m kimi_rl.bench.preload) start without them
    from kimi_rl.bench import ceilings, rollout as bench_rollout, sandbox as sandbox_bench
    from kimi_rl.config.loader import load_config

    cfg = load_config(list(overrides or []))
    opts = cfg.bench
    if opts.ceilings:
        print("== each stage against its ceiling on this machine", flush=True)
        ceilings.run(cfg)
        print()
    print("== rollouts: partial vs full (paper 2.6.2)", flush=True)
    status = bench_rollout.run(opts)
    print("\n== code sandbox: executions per second (paper 2.6.4)", flush=True)
    return max(status, sandbox_bench.run(opts.sandbox_runs, opts.sandbox_workers, opts.sandbox_backends))


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
