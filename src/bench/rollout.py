"""Benchmark: rollout iteration wall time and tokens/s, partial rollouts vs full-length rollouts.

Paper 2.6.2 says long tails stall full rollouts and partial rollouts bound each iteration's work; here the
tail is made by construction (a tiny model whose every token ends the response with a fixed probability).
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from kimi_rl.eval.metrics import quantile
from kimi_rl.config import DataConfig, ModelConfig, RolloutConfig
from kimi_rl.data.prompts import encode_prompts
from kimi_rl.models.modeling import build_tiny_model, eos_ids, load_model, load_tokenizer
from kimi_rl.rollout import open_engine
from kimi_rl.rollout.buffer import RolloutBuffer
from kimi_rl.tasks.arithmetic import make_problems


@dataclass(frozen=True)
class TokenBias:
    """A fixed next-token distribution given to a model folder by ``bias_next_token``."""

    probs: dict[int, float]
    """Probability of each listed token id at every position; the rest share what is left uniformly."""

    def logits(self, vocab_size: int) -> list[float]:
        """Logits with ``softmax = probs`` on the listed ids, 0 for every other id.

        ``logit_v = log(p_v / p_rest)``, ``p_rest = (1 - sum_listed p) / (V - listed)``.
        """
        total = sum(self.probs.values())
        rest = vocab_size - len(self.probs)
        if not self.probs or total >= 1 or rest < 1 or min(self.probs.values()) <= 0:
            raise ValueError(f"TokenBias: probabilities {self.probs} must be > 0 and sum below 1 with "
                             f"some of the {vocab_size} ids left over")
        p_rest = (1 - total) / rest
        out = [0.0] * vocab_size
        for v, p in self.probs.items():
            out[v] = math.log(p / p_rest)
        return out


def bias_next_token(folder: Path, bias: TokenBias, channel_value: float = 1.0) -> float:
    """Rewrite the HF model in ``folder`` so its next-token distribution is ``bias`` (almost) everywhere.

    Hidden channel 0 becomes a constant: every embedding row gets ``channel_value`` there and no
    attention or MLP output writes to it, so after the final RMSNorm it holds ``h0`` at every
    position. ``lm_head[:, 0] = logits / h0`` then adds the bias; the other channels are small
    next to channel 0, so the context-dependent rest of the logits stays near 0. The model stays
    an ordinary Qwen2/Llama folder (vLLM and training load it as is). Returns ``h0``.
    """
    import torch

    model = load_model(folder, "float32")
    inner = model.model
    with torch.no_grad():
        for layer in inner.layers:
            layer.self_attn.o_proj.weight[0].zero_()  # [hidden] row 0 = output channel 0
            layer.mlp.down_proj.weight[0].zero_()
        inner.embed_tokens.weight[:, 0] = channel_value  # [V]
        seen = {}
        hook = inner.norm.register_forward_hook(lambda m, i, o: seen.update(h=o))
        ids = torch.arange(model.config.vocab_size).reshape(1, -1)  # [1, V]: every token in a context
        model(input_ids=ids)
        hook.remove()
        h0 = float(seen["h"][..., 0].mean())
        logits = torch.tensor(bias.logits(model.config.vocab_size))  # [V]
        model.lm_head.weight[:, 0] = logits / h0  # [V]
    model.save_pretrained(str(folder))
    return h0


@dataclass
class Workload:
    """What every rollout mode is given: the prompts, the batch shape and the response limit."""

    problems: list
    prompt_ids: list[list[int]]
    prompts_per_iteration: int
    k: int
    max_response_tokens: int
    eos_ids: list[int]


class RolloutLoop:
    """The rollout callback's buffer logic, one iteration per ``step``, timed.

    Each iteration draws new prompts to fill ``prompts_per_iteration * k`` trajectories (buffered
    unfinished ones count, as in ``PartialRollout.new_prompt_count``), generates one segment for every
    pending trajectory (the whole response when ``segment_tokens`` is None) and releases finished groups.
    """

    def __init__(self, name: str, segment_tokens: Optional[int], work: Workload) -> None:
        self.name, self.segment_tokens, self.work = name, segment_tokens, work
        self.buffer = RolloutBuffer()
        self.iteration_s: list[float] = []
        self.new_tokens = 0
        self.released: list = []
        self._drawn = 0

    def step(self, engine) -> None:
        w, iteration = self.work, len(self.iteration_s)
        n_new = max(0, (w.prompts_per_iteration * w.k - len(self.buffer.pending())) // w.k)
        chosen = [(self._drawn + i) % len(w.problems) for i in range(n_new)]
        self._drawn += n_new
        t0 = time.perf_counter()
        self.buffer.add_groups([w.problems[i] for i in chosen], [w.prompt_ids[i] for i in chosen], w.k, iteration)
        applied = self.buffer.generate(engine, iteration, self.segment_tokens, w.max_response_tokens, 1.0, 1.0,
                                       w.eos_ids)
        self.released += self.buffer.pop_finished_groups()
        self.iteration_s.append(time.perf_counter() - t0)
        self.new_tokens += applied.new_tokens

    @property
    def trajectories(self) -> list:
        return [t for g in self.released for t in g.trajectories]

    @property
    def total_s(self) -> float:
        return sum(self.iteration_s)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / max(self.total_s, 1e-9)


def run_interleaved(loops: Sequence[RolloutLoop], engine, target_tokens: int) -> None:
    """Step the loop that has generated the fewest tokens until every loop has ``target_tokens``.

    Interleaving exposes all modes to the same machine load (the cores here are shared).
    """
    while True:
        behind = [loop for loop in loops if loop.new_tokens < target_tokens]
        if not behind:
            return
        min(behind, key=lambda loop: loop.new_tokens).step(engine)


def format_results(full: RolloutLoop, partial: RolloutLoop) -> str:
    rows = [
        ("iterations", lambda r: f"{len(r.iteration_s)}"),
        ("iteration s, mean", lambda r: f"{statistics.mean(r.iteration_s):.3f}"),
        ("iteration s, p50", lambda r: f"{quantile(r.iteration_s, 0.5):.3f}"),
        ("iteration s, max", lambda r: f"{max(r.iteration_s):.3f}"),
        ("total s", lambda r: f"{r.total_s:.2f}"),
        ("generated tokens", lambda r: f"{r.new_tokens}"),
        ("tokens/s", lambda r: f"{r.tokens_per_s:.0f}"),
        ("released trajectories", lambda r: f"{len(r.trajectories)}"),
        ("released length p50/p90/max", lambda r: "/".join(
            f"{quantile([len(t.response_ids) for t in r.trajectories], q):.0f}" for q in (0.5, 0.9, 1.0))),
        ("segments per trajectory", lambda r: f"{statistics.mean(t.segments for t in r.trajectories):.2f}"),
    ]
    lines = [f"{'':30}{full.name:>18}{partial.name:>18}"]
    lines += [f"{label:30}{fmt(full):>18}{fmt(partial):>18}" for label, fmt in rows]
    ratio_it = statistics.mean(full.iteration_s) / max(statistics.mean(partial.iteration_s), 1e-9)
    ratio_tps = partial.tokens_per_s / max(full.tokens_per_s, 1e-9)
    lines.append(f"ratio full/partial mean iteration time: {ratio_it:.2f}x; "
                 f"partial/full tokens/s: {ratio_tps:.2f}x")
    return "\n".join(lines)


def run(args) -> int:
    """The rollout benchmark with the ``bench.*`` settings ``args`` (a ``BenchConfig``); prints its table."""
    import torch

    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)  # before the engine: in-process vLLM makes it a no-op afterwards
    model_cfg = ModelConfig(hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=4, num_kv_heads=4,
                            intermediate_size=4 * args.hidden_size, max_position_embeddings=1024)
    with tempfile.TemporaryDirectory(prefix="kimi_rl_bench_") as tmp:
        folder = build_tiny_model(model_cfg, Path(tmp) / "model", seed=args.seed)
        tok = load_tokenizer(folder)
        bias_next_token(folder, TokenBias({tok.eos_token_id: args.eos_prob}))
        problems, _ = make_problems([1, 2, 3], 200, 1, seed=args.seed)
        prompt_ids = encode_prompts(problems, tok, DataConfig())
        max_len = max(len(p) for p in prompt_ids) + args.max_response_tokens + 8
        rollout_cfg = RolloutConfig(engine="vllm", max_response_tokens=args.max_response_tokens,
                                    kv_cache_gib=0.5)
        with open_engine(rollout_cfg, folder, model_cfg, args.seed, max_len) as engine:
            work = Workload(problems, prompt_ids, args.prompts_per_iteration, args.samples_per_prompt,
                            args.max_response_tokens, eos_ids(tok))
            RolloutLoop("warm-up", None, work).step(engine)  # one full-length iteration
            load_before = os.getloadavg()[0]
            full = RolloutLoop("full", None, work)
            partial = RolloutLoop(f"partial ({args.segment_tokens})", args.segment_tokens, work)
            run_interleaved([full, partial], engine, args.target_tokens)
    device = "GPU" if torch.cuda.is_available() else "CPU"
    print(f"Rollout iterations, full-length vs partial rollouts (in-process vLLM engine on {device}, tiny "
          f"Qwen2 hidden {args.hidden_size} x {args.num_layers} layers; eos probability {args.eos_prob:.4g} per "
          f"token, so lengths are geometric with mean {1 / args.eos_prob:.0f}, cut at {args.max_response_tokens}; "
          f"{args.prompts_per_iteration} prompts x {args.samples_per_prompt} samples per iteration; "
          f"each mode runs until {args.target_tokens} tokens, the two interleaved; torch threads {threads} of {os.cpu_count()} cores, "
          f"VLLM_CPU_OMP_THREADS_BIND={os.environ.get('VLLM_CPU_OMP_THREADS_BIND', 'unset')}; rollout only, "
          f"no training; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after):")
    print(format_results(full, partial))
    return 0


if __name__ == "__main__":
    import sys

    from kimi_rl.config.loader import load_config

    raise SystemExit(run(load_config(sys.argv[1:]).bench))
