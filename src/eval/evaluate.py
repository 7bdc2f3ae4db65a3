"""Evaluation of a model folder: pass@1 / unbiased pass@k over n samples, majority vote, tokens, per level.

Figures come from the torchmetrics classes of ``kimi_rl.eval.metrics``; majority vote groups wrong answers by
their text (whitespace removed), not by mathematical equivalence, and all verified-correct ones together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from kimi_rl.tasks.base import Problem
from kimi_rl.eval.metrics import MajorityVote, MeanTokens, PassAtK, PerLevelAccuracy, TokenPercentile
from kimi_rl.rewards.code import extract_code
from kimi_rl.rewards.math import last_boxed
from kimi_rl.rewards.scoring import sample_and_score


@dataclass
class LevelStats:
    problems: int
    accuracy: float
    """pass@1: mean correctness over all n samples of the level's problems."""
    mean_tokens: float
    samples: int = 0
    """n per problem at this level (``samples_per_problem``; 0: not recorded)."""


@dataclass
class EvalResult:
    accuracy: float
    """pass@1: mean over problems of each problem's share of correct samples (the mean over all samples when every
    problem has the same n)."""
    mean_tokens: float
    """Mean over problems of each problem's mean response tokens."""
    per_level: dict[int, LevelStats] = field(default_factory=dict)
    samples: int = 1
    """n per problem (the smallest, where ``eval.balance_levels`` gave a small level more)."""
    pass_at_k: dict[int, float] = field(default_factory=dict)
    """k -> mean unbiased pass@k over problems (k in ``pass_k_values(samples)``)."""
    majority: float | None = None
    """Share of problems whose most common answer is correct (None: answers not extracted)."""
    p95_tokens: float | None = None
    """95th percentile of response tokens."""
    problems: int = 0

    def to_dict(self) -> dict:
        """Plain JSON values, floats rounded to 6 decimals (the metrics compute in float32)."""
        return {
            "accuracy": _round(self.accuracy),
            "mean_tokens": _round(self.mean_tokens),
            "samples": self.samples,
            "problems": self.problems,
            "pass_at_k": {str(k): _round(v) for k, v in sorted(self.pass_at_k.items())},
            "majority_vote": _round(self.majority),
            "p95_tokens": _round(self.p95_tokens),
            "per_level": {str(k): {f: _round(x) for f, x in vars(v).items()} for k, v in sorted(self.per_level.items())},
        }


def _round(x):
    return round(x, 6) if isinstance(x, float) else x


def cap_per_level(problems: Sequence[Problem], cap: int) -> list[Problem]:
    """The first ``cap`` problems of each difficulty level, in order (``eval.max_problems_per_level``).

    >>> [p.uid for p in cap_per_level([Problem("a", "", "", 1), Problem("b", "", "", 1), Problem("c", "", "", 2)], 1)]
    ['a', 'c']
    """
    seen: dict[int, int] = {}
    out = []
    for p in problems:
        if seen.get(p.difficulty, 0) < cap:
            seen[p.difficulty] = seen.get(p.difficulty, 0) + 1
            out.append(p)
    return out


def samples_per_problem(problems: Sequence[Problem], samples: int, balance_levels: bool = False) -> list[int]:
    """n for each problem: ``samples``; with ``balance_levels`` (``eval.balance_levels``), a level with fewer
    problems than the largest level gets more samples each, n_l = samples * ceil(largest / problems_l), so every
    level's pass@1 rests on about as many samples.

    The built-in task's level 1 has 20 held-out problems beside levels of 100: at 4 samples its pass@1 rests on 80
    samples (a standard error near 5 points), at 20 samples on 400 (under 2.5 points).

    >>> ps = [Problem("a", "", "", 1)] * 20 + [Problem("b", "", "", 2)] * 100
    >>> ns = samples_per_problem(ps, 4, True); ns[0], ns[-1]
    (20, 4)
    >>> samples_per_problem(ps, 4)[0], samples_per_problem(ps[:3] + ps[-2:], 4, True)
    (4, [4, 4, 4, 8, 8])
    """
    counts: dict[int, int] = {}
    for p in problems:
        counts[p.difficulty] = counts.get(p.difficulty, 0) + 1
    largest = max(counts.values(), default=0)
    return [samples * (-(-largest // counts[p.difficulty]) if balance_levels else 1) for p in problems]


def describe_samples(problems: Sequence[Problem], ns: Sequence[int], samples: int) -> str:
    """``"320 problems x 4 samples (level 1: 16)"``: the levels whose n differs from ``samples`` in brackets.

    >>> describe_samples([Problem("a", "", "", 1), Problem("b", "", "", 2)], [16, 4], 4)
    '2 problems x 4 samples (level 1: 16)'
    """
    return f"{len(problems)} problems x {samples} samples" + _levels_note(
        zip((p.difficulty for p in problems), ns), samples)


def samples_phrase(results: Iterable[EvalResult], samples: int) -> str:
    """``"4 samples (level 1: 20)"``: what the results' per-level figures rest on, for a report's heading.

    >>> samples_phrase([EvalResult(0.5, 9.0, {1: LevelStats(20, 0.5, 9.0, 20), 2: LevelStats(100, 0.5, 9.0, 4)})], 4)
    '4 samples (level 1: 20)'
    """
    return f"{samples} samples" + _levels_note(
        ((lv, s.samples) for r in results for lv, s in r.per_level.items()), samples)


def _levels_note(level_n: Iterable[tuple[int, int]], samples: int) -> str:
    """``" (level 1: 20)"``: the (level, n) pairs whose n is neither ``samples`` nor 0 (not recorded); "" if none."""
    more = sorted({(lv, n) for lv, n in level_n if n not in (0, samples)})
    return f" ({', '.join(f'level {lv}: {n}' for lv, n in more)})" if more else ""


def pass_k_values(n: int) -> list[int]:
    """The k reported for n samples: 1, the powers of two below n, and n.

    >>> pass_k_values(1), pass_k_values(6), pass_k_values(8)
    ([1], [1, 2, 4, 6], [1, 2, 4, 8])
    """
    ks, k = {1, n}, 2
    while k < n:
        ks.add(k)
        k *= 2
    return sorted(ks)


def answer_key(response: str) -> str | None:
    """What a sample answered, for majority voting: the last ``\\boxed{}`` content (math, arithmetic),
    else the last ``<answer>...</answer>`` (reasoning-gym), else the last fenced code block (code), with
    all whitespace removed; None when none is there.

    >>> answer_key(r"so \\boxed{ 1/2 }"), answer_key("```py\\nprint(1)\\n```"), answer_key("no idea")
    ('1/2', 'print(1)', None)
    >>> answer_key("<answer>4</answer> then <answer> 5 </answer>")
    '5'
    """
    import re

    found = last_boxed(response)
    if found is None:
        tags = re.findall(r"<answer>(.*?)</answer>", response, flags=re.DOTALL)
        found = tags[-1] if tags else None
    if found is None:
        found = extract_code(response)
    return None if found is None else "".join(found.split())


def vote_keys(texts: Sequence[str], correct: Sequence[float], reference: str) -> list[str | None]:
    """Majority-vote answers of one problem's samples: verified-correct samples form one class (the
    verifier found each equal to the reference), named after the first one's ``answer_key`` (else the
    reference), so an unboxed but correct answer still votes; wrong ones are grouped by ``answer_key``.

    >>> vote_keys([r"\\boxed{0.5}", "it is 1/2", r"\\boxed{3}"], [1.0, 1.0, 0.0], "1/2")
    ['0.5', '0.5', '3']
    """
    keys = [answer_key(t) for t in texts]
    right = [k for k, c in zip(keys, correct) if c > 0.5 and k is not None]
    name = right[0] if right else "".join(reference.split())
    return [name if c > 0.5 else k for k, c in zip(keys, correct)]


def _item(x) -> float:
    return float(x.item()) if hasattr(x, "item") else float(x)


def _per_level(problems: Sequence[Problem], lengths: list[list[int]], correct: list[list[float]]) -> dict[int, LevelStats]:
    acc, tokens = PerLevelAccuracy(), PerLevelAccuracy()  # the second one averages lengths per level
    counts: dict[int, int] = {}
    n_at: dict[int, int] = {}
    for p, ls, cs in zip(problems, lengths, correct):
        counts[p.difficulty] = counts.get(p.difficulty, 0) + 1
        n_at[p.difficulty] = max(n_at.get(p.difficulty, 0), len(cs))
        if cs:
            acc.update([p.difficulty] * len(cs), cs)
            tokens.update([p.difficulty] * len(ls), ls)
    acc_by, tok_by = acc.compute(), tokens.compute()
    return {
        lv: LevelStats(problems=counts[lv], accuracy=_item(acc_by.get(f"level_{lv}", 0.0)),
                       mean_tokens=_item(tok_by.get(f"level_{lv}", 0.0)), samples=n_at[lv])
        for lv in sorted(counts)
    }


def score_problems(problems: Sequence[Problem], lengths: list[list[int]], correct: list[list[float]],
                   samples: int, answers: list[list[str | None]] | None = None) -> EvalResult:
    """Aggregate per-sample correctness (0/1), lengths and (optionally) extracted answers, one list
    per problem (``samples`` each, or more: ``samples_per_problem``), into pass@1, pass@k for k up to
    ``samples``, majority vote, token statistics and per-level figures. Means are over problems, so a problem
    with more samples counts once."""
    flat_lengths = [n for ls in lengths for n in ls]
    sizes = [len(cs) for cs in correct if cs]
    pass_k: dict[int, float] = {}
    for k in pass_k_values(min([samples] + sizes)) if sizes else []:
        metric = PassAtK(k)
        metric.update([round(sum(cs)) for cs in correct if cs], [len(cs) for cs in correct if cs])
        pass_k[k] = _item(metric.compute())
    majority = None
    if answers is not None:
        vote = MajorityVote()
        vote.update(answers, [[c > 0.5 for c in cs] for cs in correct])
        majority = _item(vote.compute())
    mean_tokens, p95 = MeanTokens(), TokenPercentile(0.95)
    mean_tokens.update([sum(ls) / len(ls) for ls in lengths if ls])  # per problem, then over problems
    p95.update(flat_lengths)
    return EvalResult(
        accuracy=sum(sum(cs) / len(cs) for cs in correct if cs) / len(sizes) if sizes else 0.0,
        mean_tokens=_item(mean_tokens.compute()),
        per_level=_per_level(problems, lengths, correct),
        samples=samples,
        pass_at_k=pass_k,
        majority=majority,
        p95_tokens=_item(p95.compute()),
        problems=len(problems),
    )


def evaluate(engine, tokenizer, problems: Sequence[Problem], prompts: list[list[int]], verifier,
             samples: int | Sequence[int], temperature: float, max_tokens: int, top_p: float = 1.0) -> EvalResult:
    """Sample ``samples`` responses per problem (or ``samples[i]`` for problem i: ``samples_per_problem``) with
    ``engine`` and verify them (on the caller's thread); one engine call per distinct n."""
    ns = [samples] * len(problems) if isinstance(samples, int) else list(samples)
    if len(ns) != len(problems):
        raise ValueError(f"evaluate: {len(ns)} sample counts for {len(problems)} problems")
    scored: list = [None] * len(problems)
    for n in sorted(set(ns)):
        idx = [i for i, m in enumerate(ns) if m == n]
        got = sample_and_score(engine, tokenizer, [problems[i] for i in idx], [prompts[i] for i in idx], verifier, n,
                               temperature, max_tokens, top_p)
        for i, s in zip(idx, got):
            scored[i] = s
    correct = [[float(c) for c in s.correct()] for s in scored]
    answers = [vote_keys(s.texts, cs, s.problem.answer) for s, cs in zip(scored, correct)]
    return score_problems(problems, [s.lengths for s in scored], correct, min(ns, default=1), answers)


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


def format_summary(results: dict[str, EvalResult]) -> str:
    """One row per model: problems, n, pass@k (%) for every reported k, majority vote (%), mean and p95 tokens."""
    ks = sorted({k for r in results.values() for k in r.pass_at_k})
    width = max([5] + [len(n) for n in results])
    head = (f"{'model':<{width}} | {'problems':>8} {'n':>3} | " + " ".join(f"{f'pass@{k}':>7}" for k in ks)
            + f" {'maj@n':>7} | {'mean tok':>8} {'p95 tok':>8}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        cells = " ".join(f"{100 * r.pass_at_k[k]:>7.1f}" if k in r.pass_at_k else f"{'-':>7}" for k in ks)
        maj = f"{100 * r.majority:>7.1f}" if r.majority is not None else f"{'-':>7}"
        p95 = f"{r.p95_tokens:>8.1f}" if r.p95_tokens is not None else f"{'-':>8}"
        lines.append(f"{name:<{width}} | {r.problems:>8} {r.samples:>3} | {cells} {maj} | {r.mean_tokens:>8.1f} {p95}")
    return "\n".join(lines)
