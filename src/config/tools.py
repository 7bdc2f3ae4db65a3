"""Config sections of the commands beside training: ``make-tests``, ``curate``, ``difficulty``, ``long2short``,
``bench``, ``reward-model``.

Each is a section of the one config (``make_tests.*``, ``curate.*``, ``difficulty.*``, ``long2short.*``,
``bench.*``, ``reward_model.*``), overridden like any other key; its keys and defaults are written here only."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from kimi_rl.config.checks import ConfigError, _at_least, _check, _finite


@dataclass
class MakeTestsConfig:
    """``kimi-rl make-tests`` (k1.5 section 2.3.5): test inputs from each problem's generator, expected
    outputs by majority vote of its reference submissions run in the sandbox."""

    path: str = "tests/data/generated_problems/problems.jsonl"
    """Problems with a ``generator`` (Python defining ``generate(rng, index) -> str``) and ``submissions``
    (reference programs, stdin -> stdout); .jsonl / .json / .parquet."""
    out: Optional[str] = None
    """Kept problems with their tests (the format data.path reads); null: ``<stem>.tests<ext>`` beside path."""
    report: Optional[str] = None
    """JSON report; null: ``<out stem>.report.json`` beside out."""
    inputs_per_problem: int = 50
    """Inputs drawn from each generator (the paper's 50; identical inputs are kept once)."""
    submissions: int = 10
    """Reference submissions voting per problem (the first ones of a row; a row with fewer is dropped)."""
    min_agreeing: int = 7
    """An input is kept when at least this many submissions print the same output (the expected output)."""
    min_passing: int = 9
    """A problem is kept when at least this many submissions pass every kept input."""
    seed: int = 0
    """Seed of the generators' random numbers (input i of problem u gets ``random.Random(f"{seed}:{u}:{i}")``)."""
    backend: str = "auto"
    """Sandbox backend: auto (bwrap, else rlimit) | bwrap | rlimit."""
    uid_base: int = 61500
    """As root, worker i runs programs as uid ``uid_base + i`` (the code reward's workers: 61000 + i); runs at
    the same time on one machine need different bases (a run sweeps its users' processes after each program)."""
    workers: int = 0
    """Sandboxed runs at once (0: one per CPU core)."""
    time_limit_s: float = 2.0
    """CPU seconds per submission run (a row's own time_limit_s wins); wall = 2 x this + 1."""
    memory_mb: int = 512
    """Address space per submission run (a row's own memory_mb wins)."""
    generator_time_limit_s: float = 20.0
    """CPU seconds for one generator run (all of a problem's inputs)."""
    overwrite: bool = False
    """Allow ``out`` to be the input file itself."""

    def __post_init__(self) -> None:
        _finite(self, "make_tests")
        _at_least(self, "make_tests", 1, "inputs_per_problem", "submissions", "min_agreeing", "min_passing",
                  "memory_mb")
        _at_least(self, "make_tests", 0, "seed", "workers")
        _at_least(self, "make_tests", 1000, "uid_base")
        _check(2 * self.min_agreeing > self.submissions, "make_tests.min_agreeing",
               f"{self.min_agreeing} of {self.submissions} is no majority: two outputs could both reach it")
        for key in ("min_agreeing", "min_passing"):
            _check(getattr(self, key) <= self.submissions, f"make_tests.{key}",
                   f"{getattr(self, key)} is more than make_tests.submissions={self.submissions}")
        for key in ("time_limit_s", "generator_time_limit_s"):
            _check(getattr(self, key) > 0, f"make_tests.{key}", f"must be > 0, got {getattr(self, key)}")
        _check(bool(self.path.strip()), "make_tests.path", "must name a problem file")


@dataclass
class CurateConfig:
    """``kimi-rl curate`` (k1.5 section 2.3.1): drop easy-to-hack problems, those whose answer the model
    guesses without any chain of thought within ``tries`` samples."""

    out: Optional[str] = None
    """Curated copy of data.path (same format); null: ``<stem>.curated<ext>`` beside the input."""
    report: Optional[str] = None
    """JSON report of what was dropped and why; null: ``<out stem>.report.json``."""
    model: Optional[str] = None
    """Model folder that guesses (null: ``model.path``)."""
    tries: int = 8
    """N: guesses per problem; one right guess drops the problem (the paper's N = 8)."""
    max_tokens: int = 24
    """Response cap of a guess: room for an answer, none for reasoning."""
    temperature: float = 1.0
    """Sampling temperature of the guesses."""
    prompt_template: str = "{question}\n\nGive the final answer only, with no explanation and no working."
    """Prompt of a guess ({question}: the problem); replaces data.prompt_template."""
    overwrite: bool = False
    """Allow ``out`` to be the input file itself (needs ``out`` set to that path explicitly)."""
    batch_problems: int = 128
    """Problems sent to the engine per call."""

    def __post_init__(self) -> None:
        _finite(self, "curate")
        _at_least(self, "curate", 1, "tries", "max_tokens", "batch_problems")
        _check(self.temperature >= 0, "curate.temperature", "must be >= 0 (0 = greedy)")
        _check("{question}" in self.prompt_template, "curate.prompt_template",
               f"{self.prompt_template!r} has no {{question}}")


@dataclass
class DifficultyConfig:
    """Settings of ``kimi-rl difficulty`` (given as ``difficulty.KEY=VALUE``); the data, prompt, verifier,
    engine, temperature (``eval.temperature``) and response cap come from the main config."""

    out: Optional[str] = None
    """Output file (same format as ``data.path``); null: ``<input stem>.difficulty<ext>`` next to the input."""
    samples: int = 8
    """n: responses sampled per problem; the pass rate is correct / n."""
    levels: int = 3
    """L: difficulty levels 1 (easy, always solved) .. L (hard, never solved)."""
    model: Optional[str] = None
    """Model folder that samples (null: ``model.path``)."""
    overwrite: bool = False
    """Allow ``out`` to be the input file itself (needs ``out`` set to that path explicitly)."""
    pass_rate_field: str = "pass_rate"
    """Column that receives the pass rate (the level goes to ``data.difficulty_field``)."""
    batch_problems: int = 128
    """Problems sent to the engine per call (progress is reported per call)."""

    def __post_init__(self) -> None:
        _finite(self, "difficulty")
        for key in ("samples", "levels", "batch_problems"):
            if getattr(self, key) < 1:
                raise ConfigError(f"difficulty.{key}: must be >= 1, got {getattr(self, key)}")
        if not self.pass_rate_field.strip():
            raise ConfigError("difficulty.pass_rate_field: must be a non-empty field name")


LONG2SHORT_METHODS = ("merge", "merge_srs", "dpo", "rl")
"""The short models ``kimi-rl long2short`` can build (paper 2.4)."""


@dataclass
class Long2ShortConfig:
    """Settings of ``kimi-rl long2short`` (given as ``long2short.KEY=VALUE``); long2short RL takes its
    response cap and length weight from ``phase.*``. Defaults take a few minutes for the tiny model."""

    methods: list[str] = field(default_factory=lambda: list(LONG2SHORT_METHODS))
    """Short models to build: merge | merge_srs | dpo | rl."""
    merge_weight: float = 0.5
    """Model merging: weight of the long-CoT model (the paper averages: 0.5)."""
    short_model: str = "warm_up"
    """Model merging's short-CoT partner: ``warm_up`` (the run's SFT warm-up, itself trained on long traces; the
    long model is its RL fine-tune) | ``short_sft`` (the paper's short-CoT model: the warm-up's recipe on traces
    without re-checks or corrections, ``data.max_rechecks=0 data.correction_prob=0``, from the same base, cached
    like the warm-up). Measured on the tiny model: averaging the long model with ``short_sft`` gives 0% held-out
    (two separate fine-tunes of a random base do not average), with ``warm_up`` it keeps most of the accuracy."""
    problems: int = 32
    """Training problems sampled for shortest rejection sampling and DPO."""
    samples_per_problem: int = 8
    """n responses per problem from the long-CoT model (paper: 8)."""
    temperature: float = 1.0
    """Sampling temperature of those responses."""
    sft_steps: int = 30
    """merge_srs: SFT steps on the shortest correct responses."""
    sft_lr: float = 2e-5
    """merge_srs: peak SFT learning rate (warm-up, cosine decay)."""
    sft_tokens_per_step: int = 4096
    """merge_srs: token budget of one SFT batch."""
    dpo_ratio: float = 1.5
    """DPO: a correct response at least this many times longer than the chosen one is rejected."""
    dpo_beta: float = 0.1
    """DPO: beta of the loss."""
    dpo_lr: float = 2e-6
    """DPO: AdamW learning rate."""
    dpo_steps: int = 20
    """DPO: optimizer steps."""
    dpo_pairs_per_step: int = 8
    """DPO: preference pairs per step."""
    rl_iterations: int = 8
    """Long2short RL: iterations from the long-CoT model."""
    rl_prompts_per_iteration: int = 8
    """Long2short RL: prompts per iteration (``rollout.samples_per_prompt`` samples each)."""
    eval_max_problems_per_level: Optional[int] = 25
    """The comparison of all models: held-out problems per level (null: ``eval.max_problems_per_level``)."""

    def __post_init__(self) -> None:
        _finite(self, "long2short")
        _check(self.short_model in ("short_sft", "warm_up"), "long2short.short_model",
               f"must be short_sft or warm_up, got {self.short_model!r}")
        bad = [m for m in self.methods if m not in LONG2SHORT_METHODS]
        if bad or not self.methods:
            raise ConfigError(f"long2short.methods: {bad or '[]'} is not a list of {', '.join(LONG2SHORT_METHODS)}")
        if not 0.0 <= self.merge_weight <= 1.0:
            raise ConfigError(f"long2short.merge_weight: must be in [0, 1], got {self.merge_weight}")
        for key in ("problems", "samples_per_problem", "sft_steps", "dpo_steps", "dpo_pairs_per_step",
                    "rl_iterations", "rl_prompts_per_iteration"):
            if getattr(self, key) < 1:
                raise ConfigError(f"long2short.{key}: must be >= 1, got {getattr(self, key)}")
        if self.dpo_ratio <= 1.0:
            raise ConfigError(f"long2short.dpo_ratio: must be > 1, got {self.dpo_ratio}")
        if self.eval_max_problems_per_level is not None and self.eval_max_problems_per_level < 1:
            raise ConfigError(f"long2short.eval_max_problems_per_level: must be >= 1 or null, "
                              f"got {self.eval_max_problems_per_level}")
        if self.sft_tokens_per_step < 64:
            raise ConfigError(f"long2short.sft_tokens_per_step: must be >= 64, got {self.sft_tokens_per_step}")


@dataclass
class BenchConfig:
    """``kimi-rl bench``: partial vs full rollouts (paper 2.6.2) on a tiny model with geometric response lengths,
    and sandboxed executions per second (2.6.4); figures side by side in one run, never a pass/fail on a time."""

    eos_prob: float = 1 / 64
    """Rollouts: per-token probability of eos (lengths are geometric with mean 1 / eos_prob)."""
    max_response_tokens: int = 256
    """Rollouts: response cap."""
    segment_tokens: int = 32
    """Rollouts: the partial rollouts' segment."""
    prompts_per_iteration: int = 16
    samples_per_prompt: int = 4
    target_tokens: int = 24000
    """Rollouts: each mode generates at least this many tokens (the two modes interleaved)."""
    threads: int = 0
    """Rollouts: torch threads (0: all cores)."""
    hidden_size: int = 128
    """Rollouts: the tiny model's width."""
    num_layers: int = 4
    seed: int = 0
    sandbox_runs: int = 50
    """Sandbox: executions per backend."""
    sandbox_workers: int = 0
    """Sandbox: concurrent executions (0: one per core)."""
    sandbox_backends: list[str] = field(default_factory=list)
    """Sandbox: backends to time ([]: every registered one)."""
    ceilings: bool = True
    """Run the stage-against-ceiling benchmark (``kimi_rl.bench.ceilings``)."""
    ceiling_model: Optional[str] = None
    """Ceilings: the model folder; null: the default run's cached SFT warm-up under ``run.dir`` when there is
    one (realistic response lengths), else the tiny base model built from ``model.*``."""
    ceiling_prompts: int = 64
    """Ceilings: prompts per iteration (the default RL batch)."""
    ceiling_samples: int = 8
    """Ceilings: samples per prompt."""
    ceiling_max_response_tokens: int = 320
    ceiling_rl_iterations: int = 4
    """Ceilings: iterations of the short real RL run (the first is not counted: one-off costs)."""
    train_rows: int = 16
    """Ceilings: rows of the timed training step (an RL minibatch); the SFT step takes 9216 tokens."""
    train_seq_len: int = 192
    train_steps: int = 5
    """Ceilings: timed training steps (the fastest counts)."""
    real_model: Optional[str] = "runs/models/smollm2"
    """Ceilings: a real model measured beside the default one (skipped when the folder is not there; null: off)."""
    real_model_preset: Optional[str] = "smollm2_gym"
    """Ceilings: the real model's RL run is ``experiment=<this>`` at the batch below (null: the default pipeline)."""
    real_model_prompts: int = 8
    real_model_samples: int = 8
    real_model_max_response_tokens: int = 160
    real_model_rl_iterations: int = 3
    """Ceilings: iterations of the real model's short RL run (the first is not counted)."""
    real_model_train_steps: int = 2
    """Ceilings: the real model's timed training steps (the fastest counts)."""
    preload_rounds: int = 2
    """Ceilings: rounds of the LD_PRELOAD comparison (``kimi_rl.bench.preload``: vLLM's engine alone and a training
    step in child processes without and with Intel OpenMP / tcmalloc preloaded, each library found on this
    machine); 0: off."""
    preload_prompts: int = 32
    """Ceilings: prompts of the LD_PRELOAD comparison's batch (x ``ceiling_samples``, ``ceiling_max_response_tokens``)."""
    out: str = "runs/bench/ceilings.json"
    """Ceilings: JSON output."""

    def __post_init__(self) -> None:
        _finite(self, "bench")
        _check(0 < self.eos_prob < 1, "bench.eos_prob", f"must be in (0, 1), got {self.eos_prob}")
        _at_least(self, "bench", 1, "max_response_tokens", "segment_tokens", "prompts_per_iteration",
                  "samples_per_prompt", "target_tokens", "hidden_size", "num_layers", "sandbox_runs")
        _at_least(self, "bench", 0, "threads", "seed", "sandbox_workers", "preload_rounds")
        _at_least(self, "bench", 1, "preload_prompts")
        _at_least(self, "bench", 1, "ceiling_prompts", "ceiling_samples", "ceiling_max_response_tokens", "train_rows",
                  "train_seq_len", "train_steps")
        _at_least(self, "bench", 2, "ceiling_rl_iterations", "real_model_rl_iterations")
        _at_least(self, "bench", 1, "real_model_prompts", "real_model_samples", "real_model_max_response_tokens",
                  "real_model_train_steps")
        _check(self.segment_tokens <= self.max_response_tokens, "bench.segment_tokens",
               f"{self.segment_tokens} is more than bench.max_response_tokens={self.max_response_tokens}")


REWARD_MODEL_KINDS = ("classic", "cot")
"""The reward models ``kimi-rl reward-model`` trains (paper 2.1): a value head, a chain-of-thought judge."""


@dataclass
class RewardModelConfig:
    """``kimi-rl reward-model`` (k1.5 section 2.1): a classic and a chain-of-thought reward model trained on the
    policy's own responses labelled by the data's rule verifier, then their agreement with the rule on held-out
    responses. The models serve as ``data.verifier=reward_model`` (``data.verifier_options.model``)."""

    kinds: list[str] = field(default_factory=lambda: list(REWARD_MODEL_KINDS))
    """Reward models to train: classic (sequence-classification head) | cot (reasons, then a JSON verdict)."""
    model: Optional[str] = None
    """Policy folder whose samples are labelled and from which both models start (null: model.path, else the
    run's SFT warm-up, trained or reused from the cache)."""
    out: Optional[str] = None
    """Output folder (models, labelled responses, report); null: ``runs/<run.name>/reward_models``."""
    train_problems_per_level: int = 300
    """Training problems per level whose responses are labelled."""
    samples: int = 4
    """Responses sampled per problem (train and held-out)."""
    temperature: float = 1.0
    """Sampling temperature of those responses."""
    steps: int = 300
    """Optimizer steps of each reward model."""
    lr: float = 2.0e-3
    """Peak AdamW learning rate (linear warm-up over a tenth of the steps, cosine decay)."""
    tokens_per_step: int = 8192
    """Token budget of one training batch (length-bucketed)."""
    judge_max_tokens: int = 96
    """CoT judge: longest judgement (reasoning + verdict)."""
    judge_response_tokens: Optional[int] = 64
    """Both judges read only the last n tokens of a response (null: all of it, up to the context); use the same
    ``response_tokens`` in ``data.verifier_options`` when the judge serves as the reward. 64 (a departure: the
    paper's judge reads the whole response): 3x more judgements per step of the same tokens."""

    def __post_init__(self) -> None:
        _finite(self, "reward_model")
        bad = [k for k in self.kinds if k not in REWARD_MODEL_KINDS]
        _check(bool(self.kinds) and not bad, "reward_model.kinds",
               f"{bad or '[]'} is not a list of {', '.join(REWARD_MODEL_KINDS)}")
        _at_least(self, "reward_model", 1, "train_problems_per_level", "samples", "steps", "judge_max_tokens")
        _at_least(self, "reward_model", 256, "tokens_per_step")
        _check(self.judge_response_tokens is None or self.judge_response_tokens >= 1,
               "reward_model.judge_response_tokens", "must be null or >= 1")
        _check(self.lr > 0, "reward_model.lr", f"must be > 0, got {self.lr}")
        _check(self.temperature >= 0, "reward_model.temperature", "must be >= 0 (0 = greedy)")
