"""The code reward (k1.5 section 2.3.5): the response's last code block run on the tests in a sandbox.

Reward 1 when every test passes (option: the fraction passed); the paper's sandbox service is a local backend.
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Sequence

from kimi_rl.sandbox import Limits, Sandbox, make_sandbox, parallel_map
from kimi_rl.sandbox.process import DEFAULT_UID_BASE
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.code import CodeSpec, StdioTest

FENCE = re.compile(r"^[ \t]*```[ \t]*[\w+#.-]*[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)

WRONG_EXIT = 97
"""The driver's exit status when a test's assertion fails (a wrong answer, not a crash)."""
DRIVER = f'''import sys
def _run():
    token = sys.stdin.readline().strip()
    scope = {{"__name__": "__main__", "__builtins__": __builtins__}}
    exec(compile(open("solution.py").read(), "solution.py", "exec"), scope)
    try:
        exec(compile(open("tests.py").read(), "tests.py", "exec"), scope)
    except AssertionError:
        import traceback
        traceback.print_exc()
        sys.exit({WRONG_EXIT})
    sys.__stdout__.write("\\n" + token + "\\n")
    sys.__stdout__.flush()
_run()
'''
"""Runs solution then tests, then prints a token read from stdin before the program ran: an
``exit(0)`` in the solution skips the tests and the token, so it fails. (A program that digs the
token out of the driver's frame could still forge it: same-process tests cannot stop that.)"""

VERDICT_COUNTERS = {"pass": "tests_passed", "wrong": "wrong_answer", "error": "runtime_error",
                    "timeout": "timeout", "output_limit": "output_limit"}
"""Verdict of one test run -> the CodeRewardStats field that counts it."""


def extract_code(response: str) -> str | None:
    """The last closed fenced code block of ``response`` (any language tag), or None.

    >>> extract_code("try this:\\n```python\\nprint(1)\\n```\\nthen\\n```py\\nprint(2)\\n```")
    'print(2)\\n'
    """
    blocks = FENCE.findall(response)
    return blocks[-1] if blocks else None


def outputs_match(actual: str, expected: str) -> bool:
    """Judge-style comparison: equal line by line after stripping trailing spaces and trailing blank lines."""
    def lines(text: str) -> list[str]:
        out = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while out and not out[-1]:
            out.pop()
        return out

    return lines(actual) == lines(expected)


@dataclass(frozen=True)
class Outcome:
    """One response's score and the verdict of each test run (runs stop at the first failure unless
    the fraction is asked for)."""

    score: float
    verdicts: tuple[str, ...] = ()
    no_code: bool = False


@dataclass
class CodeRewardStats:
    """Counts to log (``as_dict``); they add up over calls until ``CodeVerifier.pop_stats``."""

    responses: int = 0
    no_code_block: int = 0
    all_passed: int = 0
    runs: int = 0
    tests_passed: int = 0
    wrong_answer: int = 0
    runtime_error: int = 0
    """Non-zero exit or killed by a signal (CPU or memory limit, a crash)."""
    timeout: int = 0
    output_limit: int = 0

    def add(self, outcome: Outcome, executed: bool = True) -> None:
        """Count one response; its test runs only when ``executed`` (not a duplicate's shared result)."""
        self.responses += 1
        self.no_code_block += outcome.no_code
        self.all_passed += outcome.score == 1.0
        if not executed:
            return
        self.runs += len(outcome.verdicts)
        for verdict in outcome.verdicts:
            name = VERDICT_COUNTERS[verdict]
            setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def run_test(sandbox: Sandbox, program: str, test: StdioTest | str, limits: Limits, slot: int) -> str:
    """One sandboxed run of ``program`` on one test -> a verdict (a VERDICT_COUNTERS key)."""
    argv = [sandbox.python, "-I", "-S"]
    if isinstance(test, StdioTest):
        result = sandbox.run({"main.py": program}, argv + ["main.py"], test.input.encode(), limits, slot)
        if not result.ok:
            return result.status
        return "pass" if outputs_match(result.stdout, test.output) else "wrong"
    token = secrets.token_hex(16)
    files = {"driver.py": DRIVER, "solution.py": program, "tests.py": test}
    result = sandbox.run(files, argv + ["driver.py"], f"{token}\n".encode(), limits, slot)
    if result.status == "error" and result.returncode == WRONG_EXIT:
        return "wrong"
    if not result.ok:
        return result.status
    tail = result.stdout.rstrip().rsplit("\n", 1)[-1]
    return "pass" if tail == token else "wrong"


def score_program(sandbox: Sandbox, spec: CodeSpec, code: str | None, limits: Limits, fraction: bool,
                  slot: int = 0) -> Outcome:
    """r = 1[all tests pass], or (tests passed) / (tests) when ``fraction``; no code block: r = 0."""
    if code is None:
        return Outcome(0.0, no_code=True)
    program = f"{spec.prefix}\n{code}" if spec.prefix else code
    limits = limits.for_problem(spec.time_limit_s, spec.memory_mb)
    verdicts: list[str] = []
    for test in spec.tests:
        verdicts.append(run_test(sandbox, program, test, limits, slot))
        if verdicts[-1] != "pass" and not fraction:
            break
    passed = verdicts.count("pass")
    score = passed / len(spec.tests) if fraction else float(passed == len(spec.tests))
    return Outcome(score, tuple(verdicts))


def code_spec(problem: Problem) -> CodeSpec:
    spec = problem.meta.get("code")
    if not isinstance(spec, CodeSpec):
        raise ValueError(f"problem '{problem.uid}' has no code tests (meta['code']); load code problems "
                         f"with kimi_rl.tasks.code.load_code_problems or load_humaneval")
    return spec


class CodeVerifier:
    """``(responses, problems) -> rewards``, scoring responses in parallel on ``workers`` threads.

    Identical programs for the same problem (common within a group of k samples) run once.
    """

    def __init__(self, sandbox: Sandbox, limits: Limits, fraction: bool = False, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"code verifier: workers must be >= 1, got {workers}")
        self.sandbox, self.limits, self.fraction, self.workers = sandbox, limits, fraction, workers
        self.stats = CodeRewardStats()

    def __call__(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        return [outcome.score for outcome in self.outcomes(responses, problems)]

    def outcomes(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[Outcome]:
        """Scores with each test run's verdict; counted in ``stats``."""
        if len(responses) != len(problems):
            raise ValueError(f"code verifier: {len(responses)} responses for {len(problems)} problems")
        specs = {id(code_spec(p)): code_spec(p) for p in problems}
        keys = [(extract_code(r), id(p.meta["code"])) for r, p in zip(responses, problems)]
        unique = list(dict.fromkeys(keys))
        def score(key: tuple, slot: int) -> Outcome:
            return score_program(self.sandbox, specs[key[1]], key[0], self.limits, self.fraction, slot)

        scored = parallel_map(score, unique, self.workers)
        by_key = dict(zip(unique, scored))
        seen: set = set()
        for key in keys:
            self.stats.add(by_key[key], executed=key not in seen)
            seen.add(key)
        return [by_key[key] for key in keys]

    def pop_stats(self) -> dict[str, int]:
        """Counts since the last pop (for per-iteration logging), then reset."""
        out, self.stats = self.stats.as_dict(), CodeRewardStats()
        return out


def code_verifier(backend: str = "auto", workers: int | None = None, fraction: bool = False,
                  python: str | None = None, uid_base: int = DEFAULT_UID_BASE,
                  **limits: float) -> CodeVerifier:
    """Factory for ``VERIFIERS`` (``code``). ``limits``: any Limits field (wall_s, cpu_s, memory_mb,
    processes, file_size_mb, open_files, output_bytes, disk_mb); problems' own limits override."""
    valid = {f.name for f in fields(Limits)}
    unknown = sorted(set(limits) - valid)
    if unknown:
        raise TypeError(f"code verifier: unknown option(s) {unknown}; valid: backend, workers, fraction, "
                        f"python, uid_base, {', '.join(sorted(valid))}")
    sandbox = make_sandbox(backend, python=python, uid_base=uid_base)
    return CodeVerifier(sandbox, Limits(**limits), fraction=fraction, workers=workers or os.cpu_count() or 1)
