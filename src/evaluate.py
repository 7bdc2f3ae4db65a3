"""Held-out evaluation of a model folder: pass@1 over n samples, tokens, per difficulty level."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from kimi_rl.tasks.base import Problem


@dataclass
class LevelStats:
    problems: int
    accuracy: float
    """pass@1: mean correctness over all n samples of the level's problems."""
    mean_tokens: float


@dataclass
class EvalResult:
    accuracy: float
    mean_tokens: float
    per_level: dict[int, LevelStats] = field(default_factory=dict)
    samples: int = 1

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "mean_tokens": self.mean_tokens,
            "samples": self.samples,
            "per_level": {str(k): vars(v) for k, v in sorted(self.per_level.items())},
        }


def score_problems(problems: Sequence[Problem], lengths: list[list[int]], correct: list[list[float]],
                   samples: int) -> EvalResult:
    """Aggregate per-sample correctness and lengths into overall and per-level figures."""
    by_level: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        by_level[p.difficulty].append(i)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    per_level = {
        lv: LevelStats(
            problems=len(ix),
            accuracy=mean([c for i in ix for c in correct[i]]),
            mean_tokens=mean([n for i in ix for n in lengths[i]]),
        )
        for lv, ix in sorted(by_level.items())
    }
    return EvalResult(
        accuracy=mean([c for cs in correct for c in cs]),
        mean_tokens=mean([n for ls in lengths for n in ls]),
        per_level=per_level,
        samples=samples,
    )


def evaluate(engine, tokenizer, problems: Sequence[Problem], prompts: list[list[int]], verifier,
             samples: int, temperature: float, max_tokens: int) -> EvalResult:
    """Sample ``samples`` responses per problem with ``engine`` and verify them."""
    gens = engine.generate(prompts, max_tokens, samples, temperature, 1.0)
    texts = [[tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in gs] for gs in gens]
    flat_resp = [t for ts in texts for t in ts]
    flat_prob = [p for p, ts in zip(problems, texts) for _ in ts]
    flat_score = verifier(flat_resp, flat_prob)
    correct, pos = [], 0
    for ts in texts:
        correct.append([float(s > 0.5) for s in flat_score[pos : pos + len(ts)]])
        pos += len(ts)
    lengths = [[len(g.token_ids) for g in gs] for gs in gens]
    return score_problems(problems, lengths, correct, samples)


def format_table(results: dict[str, EvalResult]) -> str:
    """Accuracy (%) and mean tokens per level, one column pair per model."""
    names = list(results)
    levels = sorted({lv for r in results.values() for lv in r.per_level})
    head = f"{'level':>7} | " + " | ".join(f"{n[:22]:>22}" for n in names)
    sub = f"{'':>7} | " + " | ".join(f"{'acc %':>10} {'tokens':>11}" for _ in names)
    lines = [head, sub, "-" * len(head)]
    for lv in levels:
        cells = []
        for n in names:
            s = results[n].per_level.get(lv)
            cells.append(f"{100 * s.accuracy:>10.1f} {s.mean_tokens:>11.1f}" if s else f"{'-':>22}")
        lines.append(f"{lv:>7} | " + " | ".join(cells))
    lines.append("-" * len(head))
    lines.append(f"{'all':>7} | " + " | ".join(
        f"{100 * results[n].accuracy:>10.1f} {results[n].mean_tokens:>11.1f}" for n in names))
    return "\n".join(lines)
