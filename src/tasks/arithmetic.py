"""The built-in task: multi-digit addition solved with long chain-of-thought traces.

Difficulty level = digits per operand. Traces work digit by digit with carries, then
repeat redundant re-check passes and sometimes make an error and correct it, so one
problem's traces vary a lot in length (what the length reward and long2short act on).
The final answer is written ``\\boxed{N}``; ``verify`` extracts the last one.
"""
from __future__ import annotations

import random
import re

from kimi_rl.tasks.base import Problem

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _space(level: int) -> tuple[int, int]:
    """Range [lo, hi] of operands with exactly ``level`` digits (1-digit includes 0)."""
    return (0 if level == 1 else 10 ** (level - 1), 10**level - 1)


def make_problems(
    levels: list[int], train_per_level: int, heldout_per_level: int, seed: int
) -> tuple[list[Problem], list[Problem]]:
    """Deterministic, disjoint train and held-out problems for each level.

    A level's space holds ``(hi - lo + 1)^2`` ordered pairs; at most a fifth of a small
    space is held out, and train takes at most the rest.
    """
    train: list[Problem] = []
    heldout: list[Problem] = []
    for level in levels:
        rng = random.Random(f"arith-{seed}-{level}")
        lo, hi = _space(level)
        size = (hi - lo + 1) ** 2
        n_held = min(heldout_per_level, size // 5)
        n_train = min(train_per_level, size - n_held)
        if n_held + n_train == size:  # small space: shuffle all pairs
            pairs = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
            rng.shuffle(pairs)
        else:
            seen: set[tuple[int, int]] = set()
            pairs = []
            while len(pairs) < n_held + n_train:
                p = (rng.randint(lo, hi), rng.randint(lo, hi))
                if p not in seen:
                    seen.add(p)
                    pairs.append(p)
        for i, (a, b) in enumerate(pairs[: n_held + n_train]):
            prob = Problem(uid=f"L{level}-{a}+{b}", question=f"{a}+{b}=", answer=str(a + b), difficulty=level)
            (heldout if i < n_held else train).append(prob)
    return train, heldout


def _digit_steps(a: int, b: int) -> list[tuple[int, int, int, int]]:
    """Column steps from the right: (digit a, digit b, carry in, column sum)."""
    steps = []
    carry = 0
    while a or b or not steps:
        da, db = a % 10, b % 10
        s = da + db + carry
        steps.append((da, db, carry, s))
        carry = s // 10
        a, b = a // 10, b // 10
    return steps


def _step_text(da: int, db: int, cin: int, s: int) -> str:
    lhs = f"{da}+{db}" + (f"+{cin}" if cin else "")
    return f"{lhs}={s}"


TRACE_FORMATS = ("columns", "peel")
"""``data.trace_format``: how a trace walks the columns (``make_trace``)."""


def make_trace(question: str, rng: random.Random, max_rechecks: int, correction_prob: float,
               trace_format: str = "columns") -> str:
    """A long-CoT solution of ``a+b=``: column sums, optional error-then-correction,
    0..max_rechecks redundant check passes, and the boxed answer.

    ``columns`` writes each column's sum alone (``8+1=9 c0``): finding a column's digits in the question is a
    lookup by position that the tiny model learns for 1-2 digits only. ``peel`` heads each column with what is
    left of the operands (``938+711: 8+1=9 c0 r9``, then ``93+71: ...``): a column's digits are the last ones
    before ``+`` and ``:``, the next head is the last one minus a digit each, and ``r`` carries the answer's
    digits found so far, so every step copies from the line above.

    >>> make_trace("7+5=", random.Random(0), 0, 0.0)
    '7+5=12 c1\\nans 12\\n\\\\boxed{12}'
    >>> print(make_trace("93+71=", random.Random(0), 0, 0.0, "peel"))
    93+71: 3+1=4 c0 r4
    9+7: 9+7=16 c1 r64
    ans 164
    \\boxed{164}
    """
    if trace_format not in TRACE_FORMATS:
        raise ValueError(f"trace_format must be one of {TRACE_FORMATS}, got {trace_format!r}")
    a, b = (int(x) for x in question.rstrip("=").split("+"))
    steps = _digit_steps(a, b)
    lines = []
    answer_digits = ""
    for i, (da, db, cin, s) in enumerate(steps):
        head = ""
        if trace_format == "peel":
            head = f"{str(a)[: len(str(a)) - i] or 0}+{str(b)[: len(str(b)) - i] or 0}: "
        if rng.random() < correction_prob:
            wrong = s + rng.choice((-1, 1)) if s > 0 else s + 1
            lines.append(f"{head}{_step_text(da, db, cin, wrong)} no")
        answer_digits = str(s % 10) + answer_digits
        tail = f" r{answer_digits}" if trace_format == "peel" else ""
        lines.append(f"{head}{_step_text(da, db, cin, s)} c{s // 10}{tail}")
    total = a + b
    lines.append(f"ans {total}")
    for _ in range(rng.randint(0, max_rechecks)):
        lines.append("check")
        lines.extend(f"{_step_text(da, db, cin, s)} ok" for da, db, cin, s in steps)
    lines.append(f"\\boxed{{{total}}}")
    return "\n".join(lines)


def extract_answer(response: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``response``, or None."""
    found = BOXED.findall(response)
    return found[-1].strip() if found else None


def integer_answer(response: str) -> int | None:
    """The last boxed answer as an integer, or None when there is none or it is not an integer."""
    got = extract_answer(response)
    return int(got) if got is not None and re.fullmatch(r"-?\d+", got) else None


def verify(response: str, answer: str) -> float:
    """1.0 when the last boxed answer equals the reference as an integer, else 0.0."""
    got = integer_answer(response)
    return 0.0 if got is None else float(got == int(answer))
