"""``make gpu-check``: the CUDA path checked end to end on one GPU machine in a few minutes.

Runs where vLLM is absent (the lent machine has no vLLM wheel), so rollouts use ``rollout.engine=hf``:
the ``gpu`` tests; the GPU's measured bf16 matmul peak; 3 RL iterations of a ~0.4B Qwen2 built from config
with FSDP2 on one GPU in bf16 (finite losses, engine vs trainer log-probs, a checkpoint); a run killed with
SIGKILL after two checkpoints and resumed, whose next iteration must match the uninterrupted run; training
tokens/s as a share of the measured peak, and rollout tokens/s. Writes ``gpu_check.json`` and
``summary.txt`` to ``--out``. ``--cpu-smoke`` runs the same steps on the CPU with a tiny model (its test).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from kimi_rl.config import ModelConfig
from kimi_rl.models.modeling import build_tiny_model

GPU_MODEL = {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "num_kv_heads": 16, "intermediate_size": 4096,
             "max_position_embeddings": 1024}
"""~0.4B parameters (character vocabulary): a real-sized decoder stack for FSDP2, bf16 and the HF engine."""
SMOKE_MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 128,
               "max_position_embeddings": 256}
COMPARED = ("reward/mean", "response/length_mean", "train/loss", "train/entropy_estimate")


def measure_peak(device: str, size: int, dtype: torch.dtype, repeats: int = 10) -> float:
    """Matrix-product FLOP/s of ``size``^3 products in ``dtype`` (the ceiling a training step is measured against)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_args(model: dict, smoke: bool, run_dir: Path) -> list[str]:
    """``kimi-rl train`` overrides of the check's RL runs (no SFT: the policy is untrained, so every group trains)."""
    device = (["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true", "model.dtype=float32"]
              if smoke else ["trainer.accelerator=gpu", "trainer.devices=1", "trainer.strategy=fsdp",
                             "trainer.precision=bf16-true", "model.dtype=bfloat16"])
    sizes = (["rollout.prompts_per_iteration=4", "rollout.samples_per_prompt=4", "rollout.max_response_tokens=16",
              "algo.minibatch_size=8", "data.train_per_level=40", "data.heldout_per_level=4"] if smoke else
             ["rollout.prompts_per_iteration=64", "rollout.samples_per_prompt=8", "rollout.max_response_tokens=256",
              "algo.minibatch_size=64", "data.train_per_level=500", "data.heldout_per_level=16"])
    return ["train", "sft.enabled=false", "rollout.engine=hf", "rl.iterations=3", "rl.checkpoint_every=1",
            "rl.sample_log_every=0", "algo.skip_uninformative_groups=false", "data.levels=[1,2]", "data.curriculum=[]",
            "eval.samples=1", "eval.max_problems_per_level=4", f"run.dir={run_dir}",
            *[f"model.{k}={v}" for k, v in model.items()], *device, *sizes]


def run_cli(args: list[str], log: Path, timeout: float) -> subprocess.CompletedProcess:
    with open(log, "w") as out:
        return subprocess.run([sys.executable, "-m", "kimi_rl.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout, env=os.environ.copy())


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {t: {e.step: e.value for e in ea.Scalars(t)} for t in ea.Tags()["scalars"]}


def killed_and_resumed(args: list[str], run_dir: Path, timeout: float) -> dict:
    """Kill a run with SIGKILL once two checkpoints exist (inside iteration 3), resume it, return its scalars."""
    ckpts = run_dir / "killed" / "checkpoints"
    with open(run_dir / "killed.log", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kimi_rl.cli", *args, "run.name=killed"], stdout=out,
                                stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.time() + timeout
        while not (ckpts / "previous.ckpt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError("the run ended before it could be killed (see killed.log)")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    res = run_cli([*args, "run.name=killed", "run.resume=auto"], run_dir / "resumed.log", timeout)
    if res.returncode != 0:
        raise RuntimeError(f"resume exited {res.returncode} (see resumed.log)")
    return scalars(run_dir / "killed" / "tb" / "rl")


def param_count(model: dict) -> int:
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / "kimi_rl_gpu_check_count"
    built = build_tiny_model(ModelConfig(**model), folder)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(built))
    return sum(p.numel() for p in m.parameters())


def step(report: dict, name: str, fn) -> object:
    """Run one check; record its result, time and any error (a failed step does not stop the others)."""
    t0 = time.perf_counter()
    try:
        value = fn()
        report["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 1), "result": value}
        return value
    except Exception as e:  # noqa: BLE001 - the report names it
        report["steps"][name] = {"ok": False, "seconds": round(time.perf_counter() - t0, 1),
                                 "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kimi_rl.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json, summary.txt and logs")
    ap.add_argument("--cpu-smoke", action="store_true", help="the same steps on the CPU with a tiny model")
    ap.add_argument("--skip-resume", action="store_true", help="leave out the SIGKILL/resume runs")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per RL run")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (use --cpu-smoke to check the script on a CPU)", file=sys.stderr)
        return 2
    device = "cpu" if smoke else "cuda"
    model = SMOKE_MODEL if smoke else GPU_MODEL
    report: dict = {"mode": "cpu-smoke" if smoke else "gpu", "python": platform.python_version(),
                    "torch": torch.__version__, "cuda": torch.version.cuda,
                    "device": torch.cuda.get_device_name(0) if not smoke else platform.processor() or "cpu",
                    "model": model, "steps": {}}

    def gpu_tests():
        candidates = [Path(__file__).resolve().parents[1], Path(os.environ.get("KIMI_RL_CONF", ".")).resolve().parent,
                      Path.cwd()]  # the repository: beside src/, beside conf/, or here (make gpu-check)
        device_tests = Path("tests") / "rl" / "test_device.py"
        test_file = next((c / device_tests for c in candidates if (c / device_tests).is_file()), None)
        if test_file is None:
            raise RuntimeError(f"{device_tests} not found beside {[str(c) for c in candidates]}")
        res = subprocess.run([sys.executable, "-m", "pytest", str(test_file), "-q", "-p",
                              "no:cacheprovider"], capture_output=True, text=True, timeout=300)
        (out / "gpu_tests.log").write_text(res.stdout + res.stderr)
        last = (res.stdout.strip().splitlines() or [""])[-1]
        if res.returncode != 0:
            raise RuntimeError(f"pytest exited {res.returncode}: {last}")
        return last

    step(report, "gpu_tests", gpu_tests)
    peak = step(report, "bf16_peak_flops", lambda: measure_peak(device, 512 if smoke else 8192,
                                                                 torch.float32 if smoke else torch.bfloat16))
    n_params = step(report, "parameters", lambda: param_count(model))
    common = train_args(model, smoke, out / "runs")

    def straight():
        res = run_cli([*common, "run.name=straight"], out / "straight.log", args.timeout)
        if res.returncode != 0:
            raise RuntimeError(f"kimi-rl train exited {res.returncode} (see straight.log)")
        m = scalars(out / "runs" / "straight" / "tb" / "rl")
        losses = list(m["train/loss"].values())
        if len(losses) != 3 or not all(abs(v) < 1e30 for v in losses):
            raise RuntimeError(f"expected 3 finite losses, got {losses}")
        ref = max(m["train/ref_logp_error_absmax"].values())
        if ref > (1e-4 if smoke else 0.1):  # bf16: a forward in another batch shape rounds differently
            raise RuntimeError(f"the loss's logp_old is not the policy's own: error {ref}")
        ckpt = out / "runs" / "straight" / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            raise RuntimeError(f"no checkpoint at {ckpt}")
        tokens = sum(m["throughput/train_tokens_per_s"].values()) / 3
        return {"losses": losses, "ref_logp_error_absmax": ref,
                "engine_logp_error_absmax": max(m["train/engine_logp_error_absmax"].values()),
                "train_tokens_per_s": tokens,
                "rollout_tokens_per_s": sum(m["throughput/rollout_tokens_per_s"].values()) / 3,
                "scalars": {k: m[k] for k in COMPARED if k in m}}

    base = step(report, "rl_3_iterations", straight)
    if base and peak and n_params:
        flops = 6 * n_params * base["train_tokens_per_s"]
        report["train_model_flops_per_s"] = flops
        report["train_share_of_peak"] = flops / peak
    if base and not args.skip_resume:
        def resume():
            b = killed_and_resumed(common, out / "runs", args.timeout)
            diffs = {k: abs(b[k][2] - base["scalars"][k][2]) for k in COMPARED if k in b and 2 in b[k]}
            bad = {k: v for k, v in diffs.items() if v > 1e-3 * max(1.0, abs(base["scalars"][k][2]))}
            if not diffs or bad:
                raise RuntimeError(f"iteration 2 after resume differs from the uninterrupted run: {bad or 'no data'}")
            return diffs

        step(report, "sigkill_resume", resume)
    report["ok"] = all(s["ok"] for s in report["steps"].values())
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"gpu-check ({report['mode']}) on {report['device']}, torch {report['torch']}: "
             f"{'PASS' if report['ok'] else 'FAIL'}"]
    for name, s in report["steps"].items():
        detail = s.get("error") or (s["result"] if not isinstance(s["result"], dict) else
                                    {k: v for k, v in s["result"].items() if k != "scalars"})
        lines.append(f"  {name}: {'ok' if s['ok'] else 'FAILED'} ({s['seconds']} s) {detail}")
    if "train_share_of_peak" in report:
        lines.append(f"  training: {report['train_model_flops_per_s'] / 1e12:.2f} TFLOP/s by 6N = "
                     f"{100 * report['train_share_of_peak']:.1f}% of the measured peak {peak / 1e12:.1f} TFLOP/s")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
