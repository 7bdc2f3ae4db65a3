"""The ``math`` verifier: math-verify equivalence of a response's final answer with the reference (GSM8K or LaTeX).

A rule-based 0/1 reward on the final answer; a sample that errors or times out scores 0 and is counted.
Departs from the paper: k1.5 scored math with a chain-of-thought reward model (98.5% agreement in its
spot checks, against 84.4% for a classic value-head RM), not a symbolic checker; a rule cannot judge
free-form answers that a reward model can.
"""
from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Sequence

from math_verify import parse, verify

from kimi_rl.data.files import reference_answer
from kimi_rl.tasks.base import Problem

OUTCOMES = ("correct", "wrong", "no_answer", "error", "timeout")
OPTIONS = ("timeout_s", "workers", "chunk_size")


class _Timeout(BaseException):
    """Raised by our timer; a BaseException so math-verify's ``except Exception`` lets it through."""


@dataclass(frozen=True)
class SampleScore:
    reward: float
    outcome: str
    """One of ``OUTCOMES``."""


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces balanced), or None.

    >>> last_boxed(r"so \\boxed{1} no, \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> last_boxed(r"\\boxed{unclosed") is None
    True
    """
    start = text.rfind("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j]
        start = text.rfind("\\boxed", 0, start)
    return None


def gold_text(answer: str) -> str:
    """The reference as text math-verify parses: GSM8K's ``#### N`` becomes ``$N$``; bare LaTeX
    (MATH / MMATH answers like ``\\frac{1}{2}``) is boxed; text with ``\\boxed`` or ``$`` is kept."""
    ref = reference_answer(answer)
    if "\\boxed" in ref or "$" in ref:
        return ref
    return f"\\boxed{{{ref}}}"


def _verify(response: str, answer: str) -> str:
    """Outcome of one sample (no timeout here). math-verify's own signal timeouts are off: one
    timer per sample (``score_sample``) bounds parse + verify together."""
    gold = parse(gold_text(answer), parsing_timeout=None, raise_on_error=True)
    if not gold:
        raise ValueError(f"reference answer does not parse: {answer!r}")
    boxed = last_boxed(response)
    pred = parse(f"\\boxed{{{boxed}}}" if boxed is not None else response, parsing_timeout=None, raise_on_error=True)
    if not pred:
        return "no_answer"
    return "correct" if verify(gold, pred, timeout_seconds=None, raise_on_error=True) else "wrong"


def score_sample(response: str, answer: str, timeout_s: float) -> SampleScore:
    """Reward 1.0 when the response's final answer equals the reference, else 0.0, with why.

    Must run on a main thread (SIGALRM timer); a worker process's tasks do.
    """
    def on_alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        outcome = _verify(response, answer)
    except _Timeout:
        outcome = "timeout"
    except Exception:  # noqa: BLE001 - any failure of one sample is a 0, counted
        outcome = "error"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return SampleScore(reward=1.0 if outcome == "correct" else 0.0, outcome=outcome)


class _OwnTimerNote(logging.Filter):
    """Drops math-verify's "Timeout is disabled ... provide the logic yourself" warning: we do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


def warm_up() -> None:
    """Load math-verify's LaTeX grammar (~0.1-0.3 s once per process) outside any sample's timer,
    and silence its warning about the timeouts we disable. Cheap when repeated."""
    for name in ("math_verify.parser", "math_verify.grader"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _OwnTimerNote) for f in log.filters):
            log.addFilter(_OwnTimerNote())
    verify(parse(r"\boxed{\frac{1}{2}}", parsing_timeout=None), parse("0.5", parsing_timeout=None), timeout_seconds=None)


def _score_chunk(pairs: list[tuple[str, str]], timeout_s: float) -> list[SampleScore]:
    return [score_sample(r, a, timeout_s) for r, a in pairs]


class MathVerifier:
    """A picklable ``Verifier`` with outcome counts in ``stats`` (cumulative; ``reset_stats()``).

    ``workers=0`` scores in this process (must be its main thread); ``workers>=1`` in a pool of
    spawned processes, created on first use and reused (``close()`` ends it).
    """

    def __init__(self, timeout_s: float = 5.0, workers: int = 0, chunk_size: int = 16) -> None:
        if timeout_s <= 0:
            raise ValueError(f"math verifier: timeout_s must be > 0, got {timeout_s}")
        if workers < 0 or chunk_size < 1:
            raise ValueError(f"math verifier: need workers >= 0 and chunk_size >= 1, got {workers}, {chunk_size}")
        self.timeout_s = float(timeout_s)
        self.workers = int(workers)
        self.chunk_size = int(chunk_size)
        self.stats: dict[str, int] = {}
        self.reset_stats()
        self._pool: ProcessPoolExecutor | None = None

    def reset_stats(self) -> None:
        self.stats = {"samples": 0, "correct": 0, "wrong": 0, "no_answer": 0, "errors": 0, "timeouts": 0}

    def score(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[SampleScore]:
        if len(responses) != len(problems):
            raise ValueError(f"math verifier: {len(responses)} responses but {len(problems)} problems")
        pairs = [(r, p.answer) for r, p in zip(responses, problems)]
        if self.workers == 0:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("math verifier with workers=0 must run on the main thread "
                                   "(its timeouts use SIGALRM); set workers >= 1 to score in processes")
            warm_up()
            scores = _score_chunk(pairs, self.timeout_s)
        else:
            chunks = [pairs[i : i + self.chunk_size] for i in range(0, len(pairs), self.chunk_size)]
            results = self._executor().map(_score_chunk, chunks, [self.timeout_s] * len(chunks))
            scores = [s for chunk in results for s in chunk]
        self._count(scores)
        return scores

    def __call__(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        return [s.reward for s in self.score(responses, problems)]

    def _count(self, scores: list[SampleScore]) -> None:
        key = {"correct": "correct", "wrong": "wrong", "no_answer": "no_answer", "error": "errors", "timeout": "timeouts"}
        self.stats["samples"] += len(scores)
        for s in scores:
            self.stats[key[s.outcome]] += 1

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the parent may hold vLLM / torch threads.
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=warm_up
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def math_verifier(**options: object) -> MathVerifier:
    """Factory registered as ``math``. Options: ``timeout_s`` (per sample, parse + verify; default 5),
    ``workers`` (0: this process; n: a pool of n processes), ``chunk_size`` (samples per pool task)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"math verifier: unknown option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    return MathVerifier(**options)  # type: ignore[arg-type]
