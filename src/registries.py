"""The catalogue: every swappable component of a run by its config name, one registry per axis.

These registries are the only lists of names: config validation reads them (``algo.loss``, ``algo.optimizer``,
``rollout.engine``, ``data.sampler``, ``data.source``) and the code that builds a component gets it from them.
Built-ins are registered here lazily, as ``"module:attr"``, so reading the names imports no component and
this module imports nothing of the project but ``kimi_rl.registry``: no import cycle between the config and
the components that take it. A plugin registers with ``REGISTRY.register(name, obj)``.
"""
from __future__ import annotations

from kimi_rl.registry import Registry

LOSSES: Registry = Registry("policy loss")
"""``algo.loss`` -> a stateless loss object (``kimi_rl.rl.losses.PolicyLoss``)."""
for _name, _attr in (("mirror_descent", "MIRROR_DESCENT"), ("grpo", "GRPO"), ("rloo", "RLOO"), ("rest", "REST")):
    LOSSES.register_lazy(_name, f"kimi_rl.rl.losses:{_attr}")

OPTIMIZERS: Registry = Registry("optimizer")
"""``algo.optimizer`` -> ``build(params, algo) -> torch.optim.Optimizer`` (``kimi_rl.rl.optim``)."""
for _name in ("adamw", "sgd"):
    OPTIMIZERS.register_lazy(_name, f"kimi_rl.rl.optim:{_name}")

SAMPLERS: Registry = Registry("sampler")
"""``data.sampler`` -> a sampler class built as ``cls(difficulties, cfg.data, seed)`` (``kimi_rl.rl.sampling``)."""
for _name, _attr in (("uniform", "UniformSampler"), ("curriculum", "CurriculumSampler"),
                     ("prioritized", "PrioritizedSampler"), ("curriculum_prioritized", "CurriculumPrioritizedSampler")):
    SAMPLERS.register_lazy(_name, f"kimi_rl.rl.sampling:{_attr}")

ENGINES: Registry = Registry("rollout engine")
"""``rollout.engine`` -> an engine class with ``from_config`` (``kimi_rl.rollout.EngineFactory``)."""
ENGINES.register_lazy("vllm", "kimi_rl.rollout.engines.vllm:VLLMEngine")
ENGINES.register_lazy("hf", "kimi_rl.rollout.engines.hf:HFEngine")

SOURCES: Registry = Registry("data source")
"""``data.source`` -> a ``kimi_rl.tasks.Source`` (its loader and default verifier)."""
for _name, _attr in (("arithmetic", "ARITHMETIC"), ("vision_arithmetic", "VISION_ARITHMETIC"), ("reasoning_gym", "REASONING_GYM"), ("file", "FILE"),
                     ("math500", "MMATH"), ("aime2024", "MMATH"), ("aime2025", "MMATH"), ("humaneval", "HUMANEVAL")):
    SOURCES.register_lazy(_name, f"kimi_rl.tasks:{_attr}")
