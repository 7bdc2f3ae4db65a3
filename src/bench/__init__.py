"""``kimi-rl bench``: the project's benchmarks in one run (figures, never pass/fail on a time).

Partial vs full rollouts (``bench_rollout``, paper 2.6.2) and sandbox starts per second (``sandbox.bench``, 2.6.4).
"""
from __future__ import annotations

from typing import Optional, Sequence

SANDBOX_RUNS = 50
"""Executions per sandbox backend in ``kimi-rl bench`` (its own default, 200, is for a longer look)."""


def to_options(args: Sequence[str]) -> list[str]:
    """``key=value`` overrides as argparse options: ``segment_tokens=16`` -> ``--segment-tokens 16``.

    >>> to_options(["segment_tokens=16", "--threads", "1"])
    ['--segment-tokens', '16', '--threads', '1']
    """
    out: list[str] = []
    for arg in args:
        if "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            out += [f"--{key.replace('_', '-')}", value]
        else:
            out.append(arg)
    return out


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Rollout-bench options, sandbox-bench options (those written ``sandbox.KEY=VALUE``)."""
    rollout, sandbox = [], []
    for arg in args:
        if arg.startswith("sandbox."):
            sandbox.append(arg[len("sandbox."):])
        else:
            rollout.append(arg)
    return to_options(rollout), to_options(sandbox)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run both benchmarks and print their tables; the exit status is the worse of the two.

    ``argv``: ``KEY=VALUE`` (or ``--key value``) options of ``kimi_rl.bench.rollout`` (e.g.
    ``segment_tokens=16 target_tokens=8000``), and ``sandbox.KEY=VALUE`` ones of
    ``kimi_rl.bench.sandbox`` (e.g. ``sandbox.runs=20``).
    """
    from kimi_rl.bench import rollout as bench_rollout
    from kimi_rl.bench import sandbox as sandbox_bench

    rollout_args, sandbox_args = split_args(list(argv or []))
    if not any(a == "--runs" for a in sandbox_args):
        sandbox_args = ["--runs", str(SANDBOX_RUNS), *sandbox_args]
    print("== rollouts: partial vs full (paper 2.6.2)", flush=True)
    status = bench_rollout.main(rollout_args)
    print("\n== code sandbox: executions per second (paper 2.6.4)", flush=True)
    return max(status, sandbox_bench.main(sandbox_args))


if __name__ == "__main__":
    raise SystemExit(main())
