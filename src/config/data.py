"""The ``data`` section of the config: where problems come from, how they are split, prompted and sampled."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from kimi_rl.registries import SAMPLERS, SOURCES  # the only lists of names
from kimi_rl.config.checks import ConfigError, _at_least, _check, _finite, _one_of


@dataclass
class CurriculumStage:
    iterations: int = 0
    """How many RL iterations this stage lasts (the last stage lasts to the end)."""
    levels: list[int] = field(default_factory=list)
    """Difficulty levels drawn in this stage; empty means all levels."""


@dataclass
class DataConfig:
    source: str = "arithmetic"
    """Problem source: ``arithmetic`` (built-in generator), ``vision_arithmetic`` (the same sums shown as images; a
    vision-language model, ``model=tiny_vl``), ``file`` (``path``), ``reasoning_gym`` (``rg_*``), or a packaged set
    (math500 | aime2024 | aime2025 | humaneval)."""
    path: Optional[str] = None
    """JSONL / JSON / Parquet problem file when ``source: file``."""
    verifier: Optional[str] = None
    """Reward verifier by name (arithmetic | math | code | reasoning_gym | reward_model); null: the source's default."""
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
    image_field: Optional[str] = "image"
    """Field holding a row's image (a vision-language model): a path (relative to the file's folder), a
    ``data:image/png;base64,...`` URI, bytes (Parquet), ``{bytes, path}`` (a Hugging Face datasets Image column), or a
    list of them; each ``<image>`` in the question marks one, else they go in front. Checked when the file is read:
    missing, unreadable or wrong-size images are bad rows. null: the file has no images."""
    image_min_side: int = 8
    """Smallest width or height (pixels) a row's image may have."""
    image_max_side: int = 4096
    """Largest width or height (pixels) a row's image may have (the processor resizes to the model's input)."""
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
    trace_format: str = "peel"
    """Built-in task: how a warm-up trace walks the columns: columns (each column's sum alone, ``8+1=9 c0``) |
    peel (each column headed by what is left of the operands, ``938+711: 8+1=9 c0 r9``; ``tasks.arithmetic.make_trace``)."""
    sampler: str = "prioritized"
    """RL prompt sampler: uniform | curriculum | prioritized | curriculum_prioritized."""
    priority_floor: float = 0.05
    """Prioritized sampling: weight floor so solved problems still appear (weight = max(1 - s, floor))."""
    priority_prior: Optional[float] = 0.5
    """Prioritized sampling: success rate assumed for problems never seen; null: the mean observed success
    rate of the problem's level (0.5 until its level has one), so priorities act on a pool too large for
    problems to be drawn twice."""
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
    (``<answer>...</answer>``, the package's own) | ``boxed`` (``\\boxed{...}``, as the math prompts here) |
    ``last_number`` (the reply's last number; for tasks whose answers are numbers, checked when problems are made:
    a small instruct model that never writes tags still gets a reward signal)."""

    def __post_init__(self) -> None:
        _finite(self, "data")
        _one_of(self.source, "data.source", tuple(SOURCES.names()))
        _one_of(self.sampler, "data.sampler", tuple(SAMPLERS.names()))
        _check(0 <= self.priority_floor <= 1, "data.priority_floor", "must be in [0, 1]")
        _check(self.priority_prior is None or 0 <= self.priority_prior <= 1, "data.priority_prior",
               "must be in [0, 1], or null (the level's observed mean)")
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
        _one_of(self.trace_format, "data.trace_format", ("columns", "peel"))  # tasks.arithmetic.TRACE_FORMATS
        _at_least(self, "data", 1, "image_min_side")
        _check(self.image_max_side >= self.image_min_side, "data.image_max_side",
               f"must be >= data.image_min_side={self.image_min_side}, got {self.image_max_side}")
        _check(self.image_field is None or bool(self.image_field.strip()), "data.image_field",
               "must name a field of the data rows, or be null (no images)")
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
        _one_of(self.rg_answer_format, "data.rg_answer_format", ("answer_tags", "boxed", "last_number"))
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
