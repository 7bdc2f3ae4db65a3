"""The transformers rollout engine: ``model.generate`` on its own copy of the policy (the fallback).

Same contract as the vLLM engine: recorded log-probs are the raw model distribution at
temperature 1 (vLLM's ``raw_logprobs``), whatever temperature / top-p the sampling used.
"""
from __future__ import annotations

from pathlib import Path

import torch

from kimi_rl.config import ModelConfig, RolloutConfig
from kimi_rl.models.modeling import eos_ids, load_model, load_tokenizer
from kimi_rl.models.vision import is_vision_folder, load_processor, pixel_inputs
from kimi_rl.rollout.requests import call_seed, check_sampling, prompt_budgets
from kimi_rl.rollout.types import Generation


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts right-aligned in one batch: ``(input_ids, attention_mask)``, both ``[B, L]``."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # [B, L]
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def sampled_logprobs(logits: tuple[torch.Tensor, ...], tokens: torch.Tensor) -> torch.Tensor:
    """``log softmax(z_t)[y_t]`` of each sampled token from the raw (unprocessed) logits.

    ``logits``: T tensors ``[B, V]`` (transformers ``output_logits``); ``tokens``: ``[B, T]``.
    """
    out = torch.empty(tokens.shape, dtype=torch.float32)  # [B, T]
    for t, step in enumerate(logits):
        logp = torch.log_softmax(step.float(), dim=-1)  # [B, V]
        out[:, t] = logp.gather(1, tokens[:, t : t + 1].to(logp.device)).squeeze(1).cpu()  # [B]
    return out


def cut_at_eos(tokens: list[int], logprobs: list[float], budget: int, eos: set[int]) -> Generation:
    """The sample up to (and with) its first eos within ``budget`` tokens: ``stop``; else ``length``."""
    for k, tok in enumerate(tokens[:budget]):
        if tok in eos:
            return Generation(tokens[: k + 1], logprobs[: k + 1], "stop")
    return Generation(tokens[:budget], logprobs[:budget], "length")


class HFEngine:
    """``n`` samples per prompt with transformers ``generate``; weights loaded with ``load_state_dict``.

    Rows are sampled in chunks of ``max_batch_rows`` (prompt x sample), each chunk to the longest
    budget in it, then cut to each prompt's own budget. Call ``c`` of an engine seeded ``s`` samples
    under ``torch.manual_seed(call_seed(s, c))`` inside a forked RNG, so the caller's RNG is untouched.
    """

    def __init__(
        self,
        model_dir: str | Path,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int = 1024,
        device: str | None = None,
        max_batch_rows: int = 512,
    ) -> None:
        self.dtype = dtype
        self.seed = seed
        self.max_model_len = max_model_len
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_batch_rows = max_batch_rows
        self.calls = 0
        self.rebuild(model_dir)

    @classmethod
    def from_config(
        cls, cfg: RolloutConfig, model_dir: Path, model_cfg: ModelConfig, seed: int, max_model_len: int,
        device: str | None = None,
    ) -> "HFEngine":
        return cls(model_dir, model_cfg.dtype, seed, max_model_len, None if device is None else str(device))

    def rebuild(self, model_dir: str | Path) -> None:
        """(Re)load model and tokenizer from the HF folder ``model_dir``."""
        self.model_dir = Path(model_dir)
        tokenizer = load_tokenizer(self.model_dir)
        self.model = load_model(self.model_dir, self.dtype).to(self.device).eval()
        self.pad_id = tokenizer.pad_token_id
        self.eos = set(eos_ids(tokenizer, self.model.generation_config))
        self.processor, self.banned = None, None
        if is_vision_folder(self.model_dir):  # see VLLMEngine._vision_setup
            self.processor = load_processor(self.model_dir)
            self.banned = tokenizer.vision_token_ids

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int | list[int], n: int, temperature: float, top_p: float,
        images: list[list] | None = None, logprobs: bool = True,
    ) -> list[list[Generation]]:
        """``n`` samples per prompt; result[i][j] is sample j of prompt i (new tokens only). ``images[i]``: the PIL
        images of prompt i's ``<image>`` blocks (a vision-language model). ``logprobs`` is not used: ``generate``
        returns the logits anyway, so every sample carries its log-probs."""
        check_sampling(n, temperature, top_p)
        if images and any(images) and self.processor is None:
            raise ValueError(f"images given for a prompt, but {self.model_dir} is not a vision-language model")
        budgets = prompt_budgets(max_new_tokens, prompts, self.max_model_len)
        rows = [(i, prompt, budget) for i, (prompt, budget) in enumerate(zip(prompts, budgets)) for _ in range(n)]
        seed = call_seed(self.seed, self.calls)
        self.calls += 1
        results: list[list[Generation]] = [[] for _ in prompts]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, len(rows), self.max_batch_rows):
                chunk = rows[start : start + self.max_batch_rows]
                for (i, _, _), gen in zip(chunk, self._sample(chunk, temperature, top_p, images)):
                    results[i].append(gen)
        return results

    @torch.no_grad()
    def _sample(self, rows: list[tuple[int, list[int], int]], temperature: float, top_p: float,
                images: list[list] | None = None) -> list[Generation]:
        ids, mask = left_pad([prompt for _, prompt, _ in rows], self.pad_id)  # [B, L], [B, L]
        extra = {}
        if self.processor is not None:
            extra["suppress_tokens"] = self.banned
            if images:
                pixels = pixel_inputs(self.processor, [im for i, _, _ in rows for im in images[i]])
                extra.update({k: v.to(self.device) for k, v in pixels.items()})
        greedy = {"do_sample": False}
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=max(budget for _, _, budget in rows),
            repetition_penalty=1.0,
            eos_token_id=sorted(self.eos),
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
            **(sampling if temperature > 0 else greedy),
            **extra,
        )
        tokens = out.sequences[:, ids.shape[1]:].cpu()  # [B, T]
        logprobs = sampled_logprobs(out.logits, tokens)  # [B, T]
        return [
            cut_at_eos(tokens[r].tolist(), logprobs[r].tolist(), budget, self.eos)
            for r, (_, _, budget) in enumerate(rows)
        ]

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy a HF-named full state dict into the engine's model (every key must match)."""
        try:
            self.model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise KeyError(f"load_weights into the model of {self.model_dir}: expected HF parameter names: {e}") from e

    def sleep(self) -> None:
        """No-op: the transformers engine keeps its weights where they are."""

    def wake_up(self) -> None:
        """No-op (see ``sleep``)."""

    def sampling_state(self) -> dict[str, int]:
        return {"seed": self.seed, "calls": self.calls}

    def load_sampling_state(self, state: dict[str, int]) -> None:
        self.seed, self.calls = int(state["seed"]), int(state["calls"])

    def close(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
