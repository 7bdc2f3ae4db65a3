"""``kimi-rl make-tests``: validated stdin/stdout tests for code problems (k1.5 section 2.3.5).

As the paper: inputs from each problem's generator, outputs by majority vote of 10 reference submissions run in the
sandbox (an input kept when >= 7 agree), a problem kept when >= 9 pass every kept input. Departs from it: generators
are plain Python (``generate(rng, index) -> str``; CYaRon works where the sandbox's Python has it), and identical
inputs are kept once.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from kimi_rl.config import Config, ConfigError, MakeTestsConfig
from kimi_rl.config.loader import load_config
from kimi_rl.eval.difficulty import _atomic_write, read_rows, write_text_rows
from kimi_rl.sandbox import Limits, SANDBOXES, make_sandbox, parallel_map

GENERATOR_DRIVER = '''\
import contextlib, json, random, sys
count, seed, uid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
scope = {"__name__": "generator"}
with contextlib.redirect_stdout(sys.stderr):
    exec(compile(open("generator.py").read(), "generator.py", "exec"), scope)
    inputs = []
    for index in range(count):
        random.seed(f"{seed}:{uid}:{index}")  # module-level random too, for CYaRon and friends
        text = scope["generate"](random.Random(f"{seed}:{uid}:{index}"), index)
        if isinstance(text, (list, tuple)):
            text = "\\n".join(map(str, text))
        text = str(text)
        inputs.append(text if text.endswith("\\n") else text + "\\n")
print(json.dumps(inputs))
'''
"""Runs in the sandbox beside ``generator.py``: calls its ``generate`` once per input, prints the inputs as JSON."""


class MakeTestsError(ValueError):
    """A malformed generator-problem row; the message names the file and row."""


@dataclass(frozen=True)
class Submission:
    label: str
    code: str


@dataclass(frozen=True)
class GeneratorProblem:
    uid: str
    row: dict
    generator: str
    submissions: tuple[Submission, ...]
    time_limit_s: Optional[float] = None
    memory_mb: Optional[int] = None


@dataclass(frozen=True)
class Judgement:
    """The two rules applied to one problem's outputs (``outputs[s][i]``: submission s on input i, None: failed)."""

    expected: tuple[Optional[str], ...]
    """Per input: the majority output when at least ``min_agreeing`` submissions printed it, else None (dropped)."""
    passed: tuple[bool, ...]
    """Per submission: its output matched the expected one on every kept input."""
    kept: bool
    """At least one input kept and at least ``min_passing`` submissions passed."""


@dataclass
class SubmissionReport:
    label: str
    passed: bool
    failed_inputs: int
    """Kept inputs it got wrong."""
    runs: dict[str, int]
    """Status of its runs on every input: ok | error | timeout | output_limit."""
    first_failure: str = ""
    """The first failed run's status and last stderr line (why a run failed), empty when none failed."""


@dataclass
class ProblemReport:
    uid: str
    inputs_generated: int = 0
    duplicates: int = 0
    inputs_kept: int = 0
    submissions_passing: int = 0
    kept: bool = False
    reason: str = ""
    submissions: list[SubmissionReport] = field(default_factory=list)
    dropped_inputs: list[dict] = field(default_factory=list)
    """Inputs without a majority: the input (first 200 characters) and its vote counts, largest first."""


def canonical_output(text: str) -> str:
    """The judge's view of an output (``rewards.code.outputs_match``): lines right-stripped, trailing blank lines
    dropped, so two outputs the judge finds equal are equal here.

    >>> canonical_output("3  \\r\\n\\n\\n") == canonical_output("3") == "3"
    True
    """
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def majority_output(outputs: Sequence[Optional[str]], min_agreeing: int) -> Optional[str]:
    """The output at least ``min_agreeing`` of the submissions printed (canonical), or None; failed runs (None)
    agree with nobody.

    >>> majority_output(["1", "1", "2", None], 2), majority_output(["1", "2", None], 2)
    ('1', None)
    """
    counts = Counter(canonical_output(o) for o in outputs if o is not None)
    if not counts:
        return None
    best, agreeing = counts.most_common(1)[0]
    return best if agreeing >= min_agreeing else None


def vote_counts(outputs: Sequence[Optional[str]]) -> list[int]:
    """Submissions per distinct output, largest first, failed runs (None) last as ones.

    >>> vote_counts(["1", "2", "1 ", None])
    [2, 1, 1]
    """
    counts = Counter(canonical_output(o) for o in outputs if o is not None)
    return sorted(counts.values(), reverse=True) + [1] * sum(o is None for o in outputs)


def judge(outputs: Sequence[Sequence[Optional[str]]], min_agreeing: int, min_passing: int) -> Judgement:
    """Input rule (>= ``min_agreeing`` agree: kept, majority is the expected output), then problem rule
    (>= ``min_passing`` submissions match every kept input). ``outputs[s][i]``: submission s on input i."""
    inputs = len(outputs[0]) if outputs else 0
    expected = tuple(majority_output([row[i] for row in outputs], min_agreeing) for i in range(inputs))
    passed = tuple(all(e is None or (row[i] is not None and canonical_output(row[i]) == e)
                       for i, e in enumerate(expected)) for row in outputs)
    kept = any(e is not None for e in expected) and sum(passed) >= min_passing
    return Judgement(expected, passed, kept)


# ---------------------------------------------------------------- rows


def parse_problem(row: Any, where: str, default_uid: str, question_field: str = "question") -> GeneratorProblem:
    """One row: ``{id?, question, generator: str, submissions: [str | {code, label?}], time_limit_s?, memory_mb?}``."""
    if not isinstance(row, Mapping):
        raise MakeTestsError(f"{where}: a row must be an object, got {type(row).__name__}")
    if not isinstance(row.get(question_field), str) or not row[question_field].strip():
        raise MakeTestsError(f"{where}: missing or empty '{question_field}'")
    generator = row.get("generator")
    if not isinstance(generator, str) or "def generate" not in generator:
        raise MakeTestsError(f"{where}: 'generator' must be Python source defining generate(rng, index) -> str")
    raw = row.get("submissions")
    if not isinstance(raw, (list, tuple)) or not raw:
        raise MakeTestsError(f"{where}: 'submissions' must be a non-empty list of programs (str or {{code, label}})")
    subs = []
    for k, item in enumerate(raw):
        code = item if isinstance(item, str) else item.get("code") if isinstance(item, Mapping) else None
        if not isinstance(code, str) or not code.strip():
            raise MakeTestsError(f"{where}: submissions[{k}] has no program text")
        label = item.get("label") if isinstance(item, Mapping) else None
        subs.append(Submission(str(label or f"#{k}"), code))
    return GeneratorProblem(uid=str(row.get("id", default_uid)), row=dict(row), generator=generator,
                            submissions=tuple(subs), time_limit_s=row.get("time_limit_s"),
                            memory_mb=row.get("memory_mb"))


def read_table_rows(path: Path) -> list[dict]:
    """Rows of a .jsonl / .json / .parquet file (``difficulty.read_rows`` for the text formats)."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise ConfigError(f"make_tests.path: '{path}' must be .jsonl, .json or .parquet")
    return read_rows(path)[0]


def write_table_rows(path: Path, rows: list[dict]) -> Path:
    """``rows`` to .jsonl / .json (``difficulty.write_text_rows``) or .parquet, atomically."""
    if path.suffix.lower() != ".parquet":
        return write_text_rows(path, rows, None, path.suffix.lower())
    import pyarrow as pa
    import pyarrow.parquet as pq

    return _atomic_write(path, lambda tmp: pq.write_table(pa.Table.from_pylist(rows), tmp))


def kept_row(problem: GeneratorProblem, inputs: Sequence[str], judgement: Judgement) -> dict:
    """The row as ``tasks.code`` reads it: the kept tests replace generator and submissions; ``solution`` is the
    first passing submission unless the row had one."""
    row = {k: v for k, v in problem.row.items() if k not in ("generator", "submissions")}
    row["tests"] = [{"input": text, "output": out + "\n"} for text, out in zip(inputs, judgement.expected)
                    if out is not None]
    if not row.get("solution"):
        row["solution"] = next(s.code for s, ok in zip(problem.submissions, judgement.passed) if ok)
    return row


# ---------------------------------------------------------------- sandbox runs


class GeneratorFailed(RuntimeError):
    """A problem's generator did not run or did not return text inputs."""


def generate_inputs(sandbox, problem: GeneratorProblem, count: int, seed: int, limits) -> list[str]:
    """``count`` inputs from the problem's generator, in one sandboxed run (``-I`` without ``-S``: the sandbox
    Python's site-packages, e.g. cyaron, may be imported)."""
    files = {"generator.py": problem.generator, "driver.py": GENERATOR_DRIVER}
    argv = [sandbox.python, "-I", "driver.py", str(count), str(seed), problem.uid]
    result = sandbox.run(files, argv, b"", limits)
    if not result.ok:
        raise GeneratorFailed(f"generator {result.status}: {_last_line(result.stderr, result.returncode)}")
    try:
        inputs = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise GeneratorFailed("generator printed no input list") from None
    return inputs


def _last_line(stderr: str, returncode: Optional[int]) -> str:
    lines = stderr.strip().splitlines()
    return lines[-1][:300] if lines else f"exit code {returncode}"


def run_submissions(sandbox, submissions: Sequence[Submission], inputs: Sequence[str], limits,
                    workers: int) -> tuple[list[list[Optional[str]]], list[list[str]]]:
    """Every submission on every input, ``workers`` runs at once: (outputs[s][i] or None when the run failed,
    status[s][i]: ``ok``, or the failure's status and last stderr line)."""
    argv = [sandbox.python, "-I", "-S", "main.py"]
    items = [(s, text) for s in submissions for text in inputs]
    results = parallel_map(lambda item, slot: sandbox.run({"main.py": item[0].code}, argv, item[1].encode(),
                                                          limits, slot), items, workers)
    n = len(inputs)
    outputs = [[r.stdout if r.ok else None for r in results[k * n:(k + 1) * n]] for k in range(len(submissions))]
    status = [[r.status if r.ok else f"{r.status}: {_last_line(r.stderr, r.returncode)}"
               for r in results[k * n:(k + 1) * n]] for k in range(len(submissions))]
    return outputs, status


def make_problem_tests(sandbox, problem: GeneratorProblem, opts: MakeTestsConfig,
                       workers: int) -> tuple[ProblemReport, Optional[dict]]:
    """Generate, run, judge one problem: its report, and its row with tests when kept."""
    report = ProblemReport(uid=problem.uid)
    if len(problem.submissions) < opts.submissions:
        report.reason = (f"{len(problem.submissions)} submissions; the rules need "
                         f"make_tests.submissions={opts.submissions}")
        return report, None
    gen_limits = Limits(cpu_s=opts.generator_time_limit_s, wall_s=2 * opts.generator_time_limit_s + 1)
    try:
        generated = generate_inputs(sandbox, problem, opts.inputs_per_problem, opts.seed, gen_limits)
    except GeneratorFailed as err:
        report.reason = str(err)
        return report, None
    inputs = list(dict.fromkeys(generated))
    report.inputs_generated, report.duplicates = len(generated), len(generated) - len(inputs)
    limits = Limits(memory_mb=opts.memory_mb).for_problem(problem.time_limit_s or opts.time_limit_s,
                                                          problem.memory_mb)
    subs = problem.submissions[:opts.submissions]
    outputs, status = run_submissions(sandbox, subs, inputs, limits, workers)
    verdict = judge(outputs, opts.min_agreeing, opts.min_passing)
    report.inputs_kept = sum(e is not None for e in verdict.expected)
    report.submissions_passing, report.kept = sum(verdict.passed), verdict.kept
    report.dropped_inputs = [{"input": text[:200], "votes": vote_counts([row[i] for row in outputs])}
                             for i, (text, e) in enumerate(zip(inputs, verdict.expected)) if e is None]
    for sub, ok, outs, stats in zip(subs, verdict.passed, outputs, status):
        wrong = sum(e is not None and (o is None or canonical_output(o) != e)
                    for o, e in zip(outs, verdict.expected))
        failures = [st for st in stats if st != "ok"]
        runs = Counter(st.split(":")[0] for st in stats)
        report.submissions.append(SubmissionReport(sub.label, ok, wrong, dict(runs), failures[0] if failures else ""))
    if not report.inputs_kept:
        report.reason = f"no input with {opts.min_agreeing} of {len(subs)} submissions agreeing"
    elif not verdict.kept:
        report.reason = f"{report.submissions_passing} of {len(subs)} submissions pass every kept input " \
                        f"(need {opts.min_passing})"
    return report, kept_row(problem, inputs, verdict) if verdict.kept else None


# ---------------------------------------------------------------- the command


@dataclass(frozen=True)
class MakeTestsResult:
    problems: list[ProblemReport]
    out: Path
    report: Path


def output_paths(opts: MakeTestsConfig) -> tuple[Path, Path, Path]:
    """(input, problems out, report) from ``make_tests.path / out / report``."""
    src = Path(opts.path).expanduser()
    if not src.is_file():
        raise ConfigError(f"make_tests.path: '{src}' does not exist")
    out = Path(opts.out).expanduser() if opts.out else src.with_name(f"{src.stem}.tests{src.suffix}")
    if out.suffix.lower() not in (".jsonl", ".json", ".parquet"):
        raise ConfigError(f"make_tests.out: '{out}' must end in .jsonl, .json or .parquet")
    if out.resolve() == src.resolve() and not (opts.out and opts.overwrite):
        raise ConfigError(f"make_tests.out: '{out}' is the input make_tests.path; set make_tests.overwrite=true "
                          "to replace it, or choose another make_tests.out")
    report = Path(opts.report).expanduser() if opts.report else out.with_name(f"{out.stem}.report.json")
    return src, out, report


def load_generator_problems(src: Path, question_field: str) -> list[GeneratorProblem]:
    rows = read_table_rows(src)
    problems = [parse_problem(r, f"{src} row {i}", f"{src.stem}-{i}", question_field) for i, r in enumerate(rows)]
    if not problems:
        raise MakeTestsError(f"{src}: no problems")
    return problems


def make_tests(cfg: Config, log=print) -> MakeTestsResult:
    """The command's work: every problem of ``make_tests.path`` through the two rules; kept problems (with tests)
    to ``out``, the report (JSON) to ``report``."""
    import os

    opts = cfg.make_tests
    src, out, report_path = output_paths(opts)
    if opts.backend != "auto" and opts.backend not in SANDBOXES:
        raise ConfigError(f"make_tests.backend: '{opts.backend}' is not one of auto, {', '.join(SANDBOXES.names())}")
    problems = load_generator_problems(src, cfg.data.question_field)
    # reference programs are trusted more than a policy's: the weak (rlimit) sandbox is allowed
    sandbox = make_sandbox(opts.backend, uid_base=opts.uid_base)
    workers = opts.workers or os.cpu_count() or 1
    reports, rows = [], []
    for k, problem in enumerate(problems, start=1):
        report, row = make_problem_tests(sandbox, problem, opts, workers)
        reports.append(report)
        rows += [row] if row else []
        log(f"[kimi-rl] make-tests {k}/{len(problems)} {problem.uid}: {report.inputs_kept}/"
            f"{report.inputs_generated - report.duplicates} inputs kept, {'kept' if report.kept else 'dropped'}")
    write_table_rows(out, rows)
    doc = {"input": str(src), "out": str(out), "sandbox": sandbox.name,
           "rules": {k: getattr(opts, k) for k in ("inputs_per_problem", "submissions", "min_agreeing",
                                                   "min_passing", "seed")},
           "problems_kept": len(rows), "problems": [asdict(r) for r in reports]}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return MakeTestsResult(reports, out, report_path)


def format_table(reports: Sequence[ProblemReport], submissions: int) -> str:
    """One line per problem: inputs generated / unique / kept, submissions passing, kept, failing submissions."""
    head = f"{'problem':<24} {'inputs':>6} {'unique':>6} {'kept':>4} {'pass':>5}  {'result':<7} failing submissions"
    lines = [head, "-" * len(head)]
    for r in reports:
        failing = ", ".join(f"{s.label} ({s.failed_inputs} wrong)" for s in r.submissions if not s.passed)
        lines.append(f"{r.uid[:24]:<24} {r.inputs_generated:>6} {r.inputs_generated - r.duplicates:>6} "
                     f"{r.inputs_kept:>4} {sum(s.passed for s in r.submissions):>2}/{submissions:<2}  "
                     f"{'kept' if r.kept else 'dropped':<7} {failing or '-'}")
        if r.reason:
            lines.append(f"{'':<24}   why dropped: {r.reason}")
    lines.append(f"{sum(r.kept for r in reports)} of {len(reports)} problems kept")
    return "\n".join(lines)


def run_make_tests(overrides: Sequence[str]) -> int:
    """The ``kimi-rl make-tests`` command."""
    cfg = load_config(list(overrides))
    result = make_tests(cfg)
    print(format_table(result.problems, cfg.make_tests.submissions))
    print(f"[kimi-rl] kept problems with their tests: {result.out}\n[kimi-rl] report: {result.report}")
    return 0
