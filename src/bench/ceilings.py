"""Benchmark: each stage of an RL iteration against its own ceiling on this machine, side by side in one run.

- the CPU (model, flags) and its matmul peak per dtype (fp32; bf16 only where the CPU has bf16 instructions,
  elsewhere it is emulated and far slower);
- training: the FLOP/s of a forward + backward + AdamW step on an RL-shaped and an SFT-shaped batch of the
  default model (FLOPs counted from the model's shapes, attention included), as a share of the fp32 peak;
- rollouts: the pipeline's buffer path (one engine call per trajectory, k copies of each prompt) against the
  engine alone generating the same batch with ``n = k`` (the rollout ceiling), in tokens/s;
- one short real RL run: each stage's share of the iteration (rollout, scoring, reference log-probs, update,
  weight sync, the rest inside the iteration) and Lightning's time between iterations; the same run again with
  right-padded rows instead of packed ones (``algo.pack_sequences``) for the update's ratio;
- the libraries vLLM asks to preload (Intel OpenMP, tcmalloc), with and without, on the same model
  (``kimi_rl.bench.preload``: child processes, ``bench.preload_rounds``);
- the same for a real model beside it (``bench.real_model``, SmolLM2-135M-Instruct when ``kimi-rl import-smollm2``
  has written it; its RL run is its preset's, ``bench.real_model_preset``), the two in columns: each stage's
  tokens/s and its ratio to that model's own ceiling.

Figures only: nothing passes or fails on a time. Settings are ``bench.*`` keys; the JSON goes to
``bench.out`` (default ``runs/bench/ceilings.json``).
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Optional

from kimi_rl.bench.preload import compare, format_preload
from kimi_rl.hardware import cpu_info


def matmul_gflops(dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """Best GFLOP/s of ``n x n @ n x n`` in ``dtype`` over repeats filling about ``seconds`` (2 n^3 FLOPs each)."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / max(time.perf_counter() - t0, 1e-9) / 1e9)
    return best


def forward_flops_per_token(config, seq_len: int) -> float:
    """Forward FLOPs of one token of a sequence of ``seq_len`` in a Qwen2/Llama decoder, from its shapes.

    Per layer: 2 x (q, k, v, o projections + the 3 MLP matrices) multiply-adds per token, plus causal attention
    ``QK^T`` and ``AV``: 2 x 2 x hidden x (mean context (seq_len + 1) / 2); then the LM head 2 x hidden x vocab.
    A training step is about 3x this (backward = 2 forward).
    """
    h, layers = config.hidden_size, config.num_hidden_layers
    head = h // config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", config.num_attention_heads) * head
    per_layer = 2 * (h * h + 2 * h * kv + h * h + 3 * h * config.intermediate_size)
    attention = 2 * 2 * h * (seq_len + 1) / 2
    return layers * (per_layer + attention) + 2 * h * config.vocab_size


def train_step_gflops(model_dir: Path, rows: int, seq_len: int, steps: int, dtype: str = "float32") -> dict:
    """Forward + backward + AdamW step on ``rows x seq_len`` random tokens of the model: time and FLOP/s."""
    import torch

    from kimi_rl.models.modeling import load_model

    model = load_model(model_dir, dtype).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    ids = torch.randint(0, model.config.vocab_size, (rows, seq_len))
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        logits = model(input_ids=ids).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    step_s = min(times[1:])
    flops = 3 * forward_flops_per_token(model.config, seq_len) * rows * seq_len
    return {"rows": rows, "seq_len": seq_len, "step_s": step_s, "tokens_per_s": rows * seq_len / step_s,
            "gflops": flops / step_s / 1e9}


def engine_alone(engine, prompts: list[list[int]], k: int, max_tokens: int, logprobs: bool = False) -> tuple[int, float]:
    """The engine alone generating ``k`` samples of each prompt (T=1) after a short warm-up: (tokens, seconds).
    Without the sampled tokens' log-probs by default, as RL rollouts run in most iterations
    (``rollout.engine_logprobs_every``) and evaluation always."""
    engine.generate(prompts[:2], 8, n=1, temperature=1.0, top_p=1.0)  # warm-up
    t0 = time.perf_counter()
    out = engine.generate(prompts, max_tokens, n=k, temperature=1.0, top_p=1.0, logprobs=logprobs)
    return sum(len(g.token_ids) for samples in out for g in samples), time.perf_counter() - t0


def rollout_ceiling(engine, prompts: list[list[int]], k: int, max_tokens: int, eos: list[int]) -> dict:
    """Tokens/s of the engine alone (``n = k`` per prompt), the same with the sampled tokens' log-probs asked for
    (what a rollout costs when the loss reads them: ``algo.recompute_logp_old`` false), and of the rollout buffer's
    path on the same batch (without them). The two engine-alone runs start from the same sampling state, so they
    sample the same tokens."""
    from kimi_rl.rollout.buffer import RolloutBuffer
    from kimi_rl.tasks.base import Problem

    state = engine.sampling_state()
    alone_tokens, alone_s = engine_alone(engine, prompts, k, max_tokens)
    engine.load_sampling_state(state)
    lp_tokens, lp_s = engine_alone(engine, prompts, k, max_tokens, logprobs=True)
    if lp_tokens != alone_tokens:
        raise RuntimeError(f"rollout ceiling: {alone_tokens} tokens without log-probs but {lp_tokens} with them from the "
                           "same sampling state: asking for log-probs changed the tokens sampled")
    buffer = RolloutBuffer()
    problems = [Problem(uid=str(i), question="", answer="") for i in range(len(prompts))]
    buffer.add_groups(problems, prompts, k, 0)
    t0 = time.perf_counter()
    applied = buffer.generate(engine, 0, None, max_tokens, 1.0, 1.0, eos, logprobs=False)
    buffer_s = time.perf_counter() - t0
    return {"prompts": len(prompts), "k": k, "alone_tokens_per_s": alone_tokens / alone_s,
            "alone_logprobs_tokens_per_s": lp_tokens / lp_s,
            "logprobs_share_of_alone": (lp_tokens / lp_s) / (alone_tokens / alone_s),
            "buffer_tokens_per_s": applied.new_tokens / buffer_s,
            "buffer_share_of_alone": (applied.new_tokens / buffer_s) / (alone_tokens / alone_s)}


ITERATION_STAGES = (("rollout", "time/rollout_s"), ("scoring", "time/score_s"), ("reference logp", "time/ref_logp_s"),
                    ("weight sync", "time/sync_s"))


def iteration_shares(overrides: list[str], iterations: int) -> dict:
    """A short real RL run (the default pipeline, warm-up off, ``overrides``): each stage's mean seconds and
    share of ``time/iteration_s``; the update is ``time/train_s`` minus the reference pass (inside it)."""
    from kimi_rl.config.loader import load_config
    from kimi_rl.pipeline import train
    from kimi_rl.runs import read_scalars

    with tempfile.TemporaryDirectory(prefix="kimi_rl_bench_rl_") as tmp:
        cfg = load_config(["sft.enabled=false", f"rl.iterations={iterations}", "rl.checkpoint_every=0",
                           "rl.sample_log_every=0", "eval.max_problems_per_level=1", "eval.samples=1",
                           f"run.dir={tmp}", "run.name=bench"] + list(overrides))
        m = read_scalars(train(cfg).paths.root / "tb" / "rl")
    skip = {0}  # the first iteration pays one-off costs (compilation, allocator growth)

    def mean(tag: str) -> float:
        values = [v for step, v in m.get(tag, {}).items() if step not in skip]
        return sum(values) / len(values) if values else 0.0

    total = mean("time/iteration_s")
    stages = {name: mean(tag) for name, tag in ITERATION_STAGES}
    stages["update"] = max(mean("time/train_s") - stages["reference logp"], 0.0)
    stages["other, inside the iteration"] = max(total - sum(stages.values()), 0.0)
    return {"iterations_measured": iterations - len(skip), "iteration_s": total,
            "stages_s": stages, "shares": {k: v / total if total else 0.0 for k, v in stages.items()},
            "between_iterations_s": mean("time/between_iterations_s"),
            "rollout_tokens_per_s": mean("throughput/rollout_tokens_per_s"),
            "train_tokens_per_s": mean("throughput/train_tokens_per_s")}


def run(cfg) -> dict:
    """All the ceiling measurements with the ``bench.*`` settings of ``cfg``: the default model, then the real one
    (``bench.real_model``, when its folder is there) on the same machine; prints the tables and writes JSON."""
    import torch

    args = cfg.bench
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    cpu = cpu_info()
    peaks = {"float32": matmul_gflops(torch.float32)}
    if cpu["bf16_hardware"]:
        peaks["bfloat16"] = matmul_gflops(torch.bfloat16)
    result: dict = {"cpu": cpu, "torch_threads": threads, "matmul_peak_gflops": peaks}
    warm = warm_up_folder(cfg)
    dtype = cfg.model.dtype  # model.dtype: auto is resolved by now (bf16 only where it is fast)
    result["dtype"] = dtype
    with tempfile.TemporaryDirectory(prefix="kimi_rl_bench_") as tmp:
        from kimi_rl.models.modeling import build_tiny_model

        folder = warm or build_tiny_model(cfg.model, Path(tmp) / "m", cfg.run.seed)
        result["model"] = str(warm) if warm else "tiny base model built from model.* (random weights)"
        result.update(model_ceilings(cfg, folder, dtype, peaks, threads, args.ceiling_prompts, args.ceiling_samples,
                                     args.ceiling_max_response_tokens, args.ceiling_rl_iterations, args.train_steps))
        rl = iteration_overrides(folder, dtype, threads, args.ceiling_prompts, args.ceiling_samples,
                                 args.ceiling_max_response_tokens)
        padded = iteration_shares(rl + ["algo.pack_sequences=false"], args.ceiling_rl_iterations)
        result["update_layouts"] = {  # the same run with right-padded rows: what packing saves
            "packed_s": result["iteration"]["stages_s"]["update"] + result["iteration"]["stages_s"]["reference logp"],
            "padded_s": padded["stages_s"]["update"] + padded["stages_s"]["reference logp"],
            "packed_train_tokens_per_s": result["iteration"]["train_tokens_per_s"],
            "padded_train_tokens_per_s": padded["train_tokens_per_s"]}
        result["preload"] = preload_comparison(cfg, folder, dtype, threads)
    result["real_model"] = real_model_ceilings(cfg, dtype, peaks, threads)
    print(format_ceilings(result), flush=True)
    if "variants" in result["preload"]:
        print(format_preload(result["preload"]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"JSON: {out}")
    return result


def preload_comparison(cfg, folder: Path, dtype: str, threads: int) -> dict:
    """``kimi_rl.bench.preload``: the libraries vLLM asks to preload, with and without, on ``folder``'s model
    (``bench.preload_rounds`` rounds of child processes; 0 skips it)."""
    args = cfg.bench
    if not args.preload_rounds:
        return {"skipped": "bench.preload_rounds is 0"}
    print(f"LD_PRELOAD variants: {args.preload_rounds} rounds of child processes", flush=True)
    spec = {"model": str(folder), "dtype": dtype, "threads": threads, "prompts": args.preload_prompts,
            "samples": args.ceiling_samples, "max_tokens": args.ceiling_max_response_tokens,
            "kv_cache_gib": cfg.rollout.kv_cache_gib, "train_rows": args.train_rows,
            "train_seq_len": args.train_seq_len, "train_steps": args.train_steps, "seed": args.seed}
    return compare(spec, args.preload_rounds)


def iteration_overrides(folder: Path, dtype: str, threads: int, prompts: int, samples: int, max_tokens: int) -> list[str]:
    return [f"model.path={folder}", f"model.dtype={dtype}", f"rollout.prompts_per_iteration={prompts}",
            f"rollout.samples_per_prompt={samples}", f"rollout.max_response_tokens={max_tokens}",
            f"trainer.threads={threads}", "algo.skip_uninformative_groups=false",  # every sample trains, also at 0%
            "algo.pack_sequences=true"]


def model_ceilings(cfg, folder: Path, dtype: str, peaks: dict, threads: int, prompts_n: int, samples: int,
                   max_tokens: int, iterations: int, train_steps: int, preset: Optional[str] = None,
                   sft_step: bool = True) -> dict:
    """One model's stages against their ceilings: the bare training step(s), the engine alone against the
    rollout buffer's path on the same batch (the preset's prompts when given, else the built-in task's), and a
    short real RL run (``experiment=preset`` when given), with
    the RL run's rollout and training tokens/s as ratios of the engine alone and of the bare training step."""
    from kimi_rl.config import ModelConfig, RolloutConfig
    from kimi_rl.data.prompts import encode_prompts
    from kimi_rl.models.modeling import eos_ids, load_tokenizer
    from kimi_rl.rollout import open_engine

    args = cfg.bench
    result: dict = {}
    shapes = [("rl_minibatch", args.train_rows)] + ([("sft_step", max(1, 9216 // args.train_seq_len))] if sft_step else [])
    for name, rows in shapes:
        r = train_step_gflops(folder, rows, args.train_seq_len, train_steps, dtype)
        r["dtype"] = dtype
        r["share_of_fp32_peak"] = r["gflops"] / peaks["float32"]
        r["share_of_peak"] = r["gflops"] / peaks.get(dtype, peaks["float32"])
        result[f"train_{name}"] = r
    tok = load_tokenizer(folder)
    if preset:  # the preset's own prompts, so that the engine alone and the RL run generate alike
        from kimi_rl.config.loader import load_config
        from kimi_rl.tasks import load_task

        data = load_config([f"experiment={preset}", f"model.path={folder}"]).data
        train = load_task(data, args.seed).train
        picked = random.Random(args.seed).sample(train, min(prompts_n, len(train)))  # across the preset's tasks
        prompts = encode_prompts(picked, tok, data)
    else:
        prompts = task_prompts(tok, prompts_n, args.seed)
    max_len = max(len(p) for p in prompts) + max_tokens + 8
    with open_engine(RolloutConfig(engine="vllm", kv_cache_gib=cfg.rollout.kv_cache_gib), folder,
                     ModelConfig(path=str(folder), dtype=dtype), args.seed, max_len) as engine:
        result["rollout"] = rollout_ceiling(engine, prompts, samples, max_tokens, eos_ids(tok))
    rl = ([f"experiment={preset}"] if preset else []) + iteration_overrides(folder, dtype, threads, prompts_n,
                                                                             samples, max_tokens)
    it = result["iteration"] = iteration_shares(rl, iterations)
    result["ratios"] = {  # the RL run against each stage's own ceiling on the same model
        "rollout_in_rl_over_engine_alone": it["rollout_tokens_per_s"] / max(result["rollout"]["alone_tokens_per_s"], 1e-9),
        "training_in_rl_over_bare_step": it["train_tokens_per_s"] / max(result["train_rl_minibatch"]["tokens_per_s"], 1e-9),
        "train_step_share_of_peak": result["train_rl_minibatch"]["share_of_peak"]}
    return result


def task_prompts(tok, n: int, seed: int) -> list[list[int]]:
    """``n`` encoded prompts of the built-in task, levels 1-4 in turn."""
    from kimi_rl.config import DataConfig
    from kimi_rl.data.prompts import encode_prompts
    from kimi_rl.tasks.arithmetic import make_problems

    train, _ = make_problems([1, 2, 3, 4], n, 1, seed=seed)
    return encode_prompts(train[::4][:n], tok, DataConfig())


def real_model_ceilings(cfg, dtype: str, peaks: dict, threads: int) -> dict:
    """``bench.real_model`` (SmolLM2-135M-Instruct by default) measured like the default model, with its preset's
    RL run (``bench.real_model_preset``) at the ``bench.real_model_*`` batch; skipped, with the reason, when the
    folder is not there."""
    args = cfg.bench
    if not args.real_model:
        return {"skipped": "bench.real_model is null"}
    folder = Path(args.real_model)
    if not (folder / "config.json").is_file():
        return {"skipped": f"bench.real_model {folder}: no model folder there (kimi-rl import-smollm2 writes it)"}
    print(f"real model {folder}: {args.real_model_prompts} prompts x {args.real_model_samples}, "
          f"{args.real_model_rl_iterations} RL iterations of experiment={args.real_model_preset}", flush=True)
    r = model_ceilings(cfg, folder, dtype, peaks, threads, args.real_model_prompts, args.real_model_samples,
                       args.real_model_max_response_tokens, args.real_model_rl_iterations, args.real_model_train_steps,
                       preset=args.real_model_preset, sft_step=False)
    r["model"] = str(folder)
    return r


def warm_up_folder(cfg) -> Optional[Path]:
    """``bench.ceiling_model``, else the default run's finished SFT warm-up in ``run.dir``'s cache, else None."""
    from kimi_rl.pipeline import cached_warm_up

    return Path(cfg.bench.ceiling_model) if cfg.bench.ceiling_model else cached_warm_up(cfg)


def format_ceilings(r: dict) -> str:
    cpu = r["cpu"]
    lines = [f"CPU: {cpu['model']}, {cpu['cores']} cores, flags: {' '.join(cpu['flags']) or '-'}; torch threads "
             f"{r['torch_threads']}",
             "matmul peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in r["matmul_peak_gflops"].items())
             + ("" if cpu["bf16_hardware"] else " (no bf16 instructions: bf16 not timed, it would be emulated)")]
    for name in ("train_rl_minibatch", "train_sft_step"):
        t = r[name]
        lines.append(f"{name}: {t['rows']} x {t['seq_len']} tokens, {t.get('dtype', 'float32')}, {t['step_s']:.3f} s/step, "
                     f"{t['tokens_per_s']:.0f} tokens/s, {t['gflops']:.1f} GFLOP/s = "
                     f"{100 * t.get('share_of_peak', t['share_of_fp32_peak']):.1f}% of the {t.get('dtype', 'float32')} peak")
    ro = r["rollout"]
    lines.append(f"rollout ({ro['prompts']} prompts x {ro['k']}): engine alone {ro['alone_tokens_per_s']:.0f} tokens/s "
                 f"({ro['alone_logprobs_tokens_per_s']:.0f} = {100 * ro['logprobs_share_of_alone']:.0f}% with the sampled "
                 f"tokens' log-probs), the buffer's path {ro['buffer_tokens_per_s']:.0f} tokens/s = "
                 f"{100 * ro['buffer_share_of_alone']:.0f}% of the engine alone")
    it = r["iteration"]
    lines.append(f"RL iteration ({it['iterations_measured']} measured): {it['iteration_s']:.2f} s; rollout "
                 f"{it['rollout_tokens_per_s']:.0f} tokens/s, training {it['train_tokens_per_s']:.0f} tokens/s; "
                 f"between iterations (Lightning) {it['between_iterations_s']:.3f} s")
    for k, v in it["stages_s"].items():
        lines.append(f"  {k:<30}{v:>8.3f} s {100 * it['shares'][k]:>6.1f}%")
    lay = r.get("update_layouts")
    real = r.get("real_model") or {}
    if "skipped" in real:
        lines.append(f"real model: skipped ({real['skipped']})")
    elif real:
        lines.append(side_by_side(r, real))
    if lay:
        lines.append(f"update + reference logp per iteration: packed rows {lay['packed_s']:.2f} s "
                     f"({lay['packed_train_tokens_per_s']:.0f} tokens/s), right-padded rows {lay['padded_s']:.2f} s "
                     f"({lay['padded_train_tokens_per_s']:.0f} tokens/s): packed takes "
                     f"{lay['packed_s'] / max(lay['padded_s'], 1e-9):.2f}x the padded time")
    return "\n".join(lines)


def side_by_side(default: dict, real: dict) -> str:
    """The default and the real model in columns: each stage's tokens/s and its ratio to its own ceiling."""
    def col(m: dict) -> list[str]:
        t, ro, it, ra = m["train_rl_minibatch"], m["rollout"], m["iteration"], m["ratios"]
        return [f"{ro['alone_tokens_per_s']:.0f}", f"{it['rollout_tokens_per_s']:.0f}",
                f"{ra['rollout_in_rl_over_engine_alone']:.2f}x", f"{t['tokens_per_s']:.0f}",
                f"{100 * ra['train_step_share_of_peak']:.1f}%", f"{it['train_tokens_per_s']:.0f}",
                f"{ra['training_in_rl_over_bare_step']:.2f}x", f"{it['iteration_s']:.1f}",
                f"{100 * it['shares'].get('rollout', 0):.0f}% / {100 * it['shares'].get('update', 0):.0f}%"
                f" / {100 * it['shares'].get('reference logp', 0):.0f}%"]
    names = ["engine alone, tokens/s", "rollout in RL, tokens/s", "  rollout in RL / engine alone",
             "bare training step, tokens/s", "  its share of the matmul peak", "training in RL, tokens/s",
             "  training in RL / bare step", "RL iteration, s", "  rollout / update / reference shares"]
    ro, rr = default["rollout"], real["rollout"]
    head = (f"side by side ({ro['prompts']} x {ro['k']} | {rr['prompts']} x {rr['k']} per iteration)",
            "default model", Path(real["model"]).name)
    rows = [head] + list(zip(names, col(default), col(real)))
    return "\n".join(f"  {a:<44}{b:>16}{c:>16}" for a, b, c in rows)
