"""The code reward (k1.5 section 2.3.5): the response's last code block run on the tests in a sandbox.

Reward 1 when every test passes (option: the fraction passed); the paper's sandbox service is a local backend.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

from kimi_rl.sandbox import Limits, Sandbox, SandboxUnavailable, WeakSandbox, harness, make_sandbox, parallel_map
from kimi_rl.sandbox.process import DEFAULT_UID_BASE
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.code import CodeSpec, StdioTest

FENCE = re.compile(r"^[ \t]*```[ \t]*[\w+#.-]*[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)

HARNESS = Path(harness.__file__).read_text()
"""The assert-test harness (kimi_rl/sandbox/harness.py), shipped into the sandbox as ``harness.py``: the
test code runs in a driver interpreter the candidate's process cannot reach, on values it rebuilt from
plain data, and the driver prints ``<token> <verdict>`` last (the token travels on its stdin)."""
PURPOSES = ("eval", "rl")

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


def run_test(sandbox: Sandbox, program: str, test: StdioTest | str, limits: Limits, slot: int,
             prefix: str = "") -> str:
    """One sandboxed run of ``program`` on one test -> a verdict (a VERDICT_COUNTERS key).

    stdio: the program's stdout is judged here. assert: the harness judges (see HARNESS); ``prefix``
    (trusted code the program starts with, e.g. HumanEval's prompt) also runs on the driver's side.
    """
    argv = [sandbox.python, "-I", "-S"]
    if isinstance(test, StdioTest):
        result = sandbox.run({"main.py": program}, argv + ["main.py"], test.input.encode(), limits, slot)
        if not result.ok:
            return result.status
        return "pass" if outputs_match(result.stdout, test.output) else "wrong"
    token = secrets.token_hex(16)
    request = json.dumps({"token": token, "prefix": prefix, "test": test}).encode()
    files = {"harness.py": HARNESS, "solution.py": program}
    result = sandbox.run(files, argv + ["harness.py"], request, limits, slot)
    if not result.ok:
        return result.status
    return harness_verdict(result.stdout, token)


def harness_verdict(stdout: str, token: str) -> str:
    """The driver's verdict: its last line must be the only one holding the token; else ``error``.

    >>> harness_verdict("checking\\nab12 pass\\n", "ab12"), harness_verdict("ab12 pass\\nab12 wrong\\n", "ab12")
    ('pass', 'error')
    """
    lines = stdout.rstrip("\n").split("\n")
    marked = [line for line in lines if token in line]
    if len(marked) != 1 or lines[-1] != marked[0]:
        return "error"
    verdict = marked[0][len(token) + 1:] if marked[0].startswith(f"{token} ") else ""
    return {"pass": "pass", "wrong": "wrong"}.get(verdict, "error")


def score_program(sandbox: Sandbox, spec: CodeSpec, code: str | None, limits: Limits, fraction: bool,
                  slot: int = 0) -> Outcome:
    """r = 1[all tests pass], or (tests passed) / (tests) when ``fraction``; no code block: r = 0."""
    if code is None:
        return Outcome(0.0, no_code=True)
    program = f"{spec.prefix}\n{code}" if spec.prefix else code
    limits = limits.for_problem(spec.time_limit_s, spec.memory_mb)
    verdicts: list[str] = []
    for test in spec.tests:
        verdicts.append(run_test(sandbox, program, test, limits, slot, prefix=spec.prefix))
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
                  python: str | None = None, uid_base: int = DEFAULT_UID_BASE, allow_weak: bool = False,
                  purpose: str = "eval", **limits: float) -> CodeVerifier:
    """Factory for ``VERIFIERS`` (``code``). ``limits``: any Limits field (wall_s, cpu_s, memory_mb,
    processes, file_size_mb, open_files, output_bytes, disk_mb); problems' own limits override.

    ``purpose="rl"`` (RL training: the policy is optimised against these rewards) refuses a sandbox that
    does not contain programs (the rlimit backend, chosen or fallen back to) unless ``allow_weak``.
    The assert-test harness is run once here, so a sandbox where it cannot work fails at start-up.
    """
    valid = {f.name for f in fields(Limits)}
    unknown = sorted(set(limits) - valid)
    if unknown:
        raise TypeError(f"code verifier: unknown option(s) {unknown}; valid: backend, workers, fraction, "
                        f"python, uid_base, allow_weak, {', '.join(sorted(valid))}")
    if not isinstance(allow_weak, bool):
        raise ValueError(f"code verifier: option 'allow_weak' must be true or false, got {allow_weak!r}")
    if purpose not in PURPOSES:
        raise ValueError(f"code verifier: purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    try:
        sandbox = make_sandbox(backend, python=python, uid_base=uid_base,
                               allow_weak=allow_weak or purpose != "rl")
    except WeakSandbox as err:
        raise ValueError(f"code verifier: allow_weak is false and this is RL training: {err}. Install "
                         f"bubblewrap (apt-get install -y bubblewrap), or set allow_weak: true to train on "
                         f"rewards a program can tamper with") from None
    verifier = CodeVerifier(sandbox, Limits(**limits), fraction=fraction, workers=workers or os.cpu_count() or 1)
    check_harness(sandbox)
    return verifier


def check_harness(sandbox: Sandbox) -> None:
    """One right and one wrong answer through the assert harness; SandboxUnavailable if it misjudges."""
    spec = CodeSpec(kind="assert", tests=("assert twice(3) == 6",))
    got = [score_program(sandbox, spec, code, Limits(wall_s=20.0), fraction=False).verdicts[0]
           for code in ("def twice(x):\n    return 2 * x\n", "def twice(x):\n    return x\n")]
    if got != ["pass", "wrong"]:
        raise SandboxUnavailable(f"the assert-test harness does not work in the {sandbox.name} sandbox: a right "
                                 f"and a wrong answer were judged {got} (expected ['pass', 'wrong'])")
