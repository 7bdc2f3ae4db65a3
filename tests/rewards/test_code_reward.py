"""The code verifier: extraction, judging, stats, and a hostile-program suite that must score 0 and stay contained.

Each hostile program is the answer to a problem whose expected output it can print only by escaping.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kimi_rl.rewards import VERIFIERS
from kimi_rl.rewards.code import (CodeVerifier, check_harness, code_verifier, extract_code, harness_verdict,
                                  outputs_match)
from kimi_rl.sandbox import SANDBOXES, Limits, RunResult, SandboxUnavailable, make_sandbox
from kimi_rl.sandbox.process import DEFAULT_UID_BASE, tasks_of_uid
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.code import CodeSpec, StdioTest

REPO = Path(__file__).resolve().parents[2]
TIGHT = Limits(wall_s=2.0, cpu_s=1.0, memory_mb=128, processes=16, file_size_mb=4, open_files=32,
               output_bytes=64 << 10, disk_mb=8)


def fence(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


def stdio_problem(uid: str, *tests: tuple[str, str]) -> Problem:
    spec = CodeSpec(kind="stdio", tests=tuple(StdioTest(i, o) for i, o in tests))
    return Problem(uid=uid, question="q", answer="", meta={"code": spec})


SUM = stdio_problem("sum", ("1 2\n", "3\n"), ("5 5\n", "10\n"), ("-1 1\n", "0\n"))
DOUBLE = Problem(uid="double", question="q", answer="", meta={"code": CodeSpec(
    kind="assert", tests=("assert double(2) == 4", "assert double(-3) == -6"))})


@pytest.fixture(scope="module", params=["bwrap", "rlimit"])
def sandbox(request):
    try:
        return make_sandbox(request.param)
    except SandboxUnavailable as err:
        pytest.skip(f"sandbox backend '{request.param}' unavailable here: {err}")


def test_extract_code_takes_the_last_closed_block():
    assert extract_code("no code here") is None
    assert extract_code("```python\nprint(1)\n```\ntext\n```\nprint(2)\n```") == "print(2)\n"
    assert extract_code("```py\nx = 1\n```\n```python\nunfinished") == "x = 1\n"
    assert extract_code("```Python3\n    return x\n```") == "    return x\n"  # indentation kept


def test_outputs_match_like_a_judge():
    assert outputs_match("3\n", "3")
    assert outputs_match("1 2  \n3\n\n\n", "1 2\n3")
    assert outputs_match("a\r\nb\r\n", "a\nb\n")
    assert not outputs_match("3 \n4", "34")
    assert not outputs_match("", "0")


def test_registered_lazily_by_name():
    added = "code" not in VERIFIERS
    if added:  # the lead adds this line to kimi_rl/rewards/__init__.py
        VERIFIERS.register_lazy("code", "kimi_rl.rewards.code:code_verifier")
    try:
        try:
            verify = VERIFIERS.get("code")(workers=1, wall_s=5.0)
        except SandboxUnavailable as err:
            pytest.skip(f"no sandbox backend runs here: {err}")
        assert verify([fence("a, b = map(int, input().split())\nprint(a + b)")], [SUM]) == [1.0]
    finally:
        if added:
            VERIFIERS.unregister("code")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(TypeError, match="unknown option.*'wall_time'.*wall_s"):
        code_verifier(wall_time=3)


def test_problem_without_tests_is_an_error(sandbox):
    verify = CodeVerifier(sandbox, TIGHT, workers=1)
    with pytest.raises(ValueError, match="problem 'plain' has no code tests"):
        verify([fence("print(1)")], [Problem(uid="plain", question="q", answer="1")])


def test_solutions_scored_right(sandbox):
    verify = CodeVerifier(sandbox, TIGHT, workers=2)
    responses = [
        fence("a, b = map(int, input().split())\nprint(a + b)"),          # correct
        fence("a, b = map(int, input().split())\nprint(a * b)"),          # wrong
        fence("a, b = map(int, input().split())\nprint(a / 0)"),          # crashes
        fence("a, b = map(int, input().split())\nprint(a + b, flush=True)\nwhile True:\n    pass"),  # never ends
        "The answer is a + b, computed in my head.",                      # no code block
        fence("a, b = map(int, input().split())\nprint(a + b)"),          # duplicate: runs once
        fence("def double(x):\n    return 2 * x"),                        # correct (assert-style)
        fence("def double(x):\n    return x + 2"),                        # wrong on the 2nd test
        fence("import sys\nsys.exit(0)\ndef double(x):\n    return 0"),   # exits before the tests run
        fence("import os\nos._exit(0)"),                                   # same, harder
    ]
    problems = [SUM] * 6 + [DOUBLE] * 4
    assert verify(responses, problems) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    stats = verify.pop_stats()
    # Runs (stop at the first failure; the duplicate shares the first's): sum 3 + 1 + 1 + 1, double
    # 2 + 2 + 1 + 1. Wrong: a*b and x+2 on the 2nd test. Errors: the crash, the loop (CPU limit, or the
    # wall limit if crowded) and the two early exits (the harness's candidate process ended).
    killed = stats.pop("runtime_error") + stats.pop("timeout")
    assert killed == 4
    assert stats == {"responses": 10, "no_code_block": 1, "all_passed": 3, "runs": 12,
                     "tests_passed": 6, "wrong_answer": 2, "output_limit": 0}
    assert verify.pop_stats()["responses"] == 0


def test_fraction_option_counts_passed_tests(sandbox):
    verify = CodeVerifier(sandbox, TIGHT, fraction=True, workers=1)
    half_right = fence("a, b = map(int, input().split())\nprint(a + b if a > 0 else 99)")  # fails -1 1
    assert verify([half_right, fence("print(0)")], [SUM, SUM]) == pytest.approx([2 / 3, 1 / 3])


# ---------------------------------------------------------------- hostile programs


def hostile_programs(ctx: dict) -> dict[str, tuple[str, str]]:
    """name -> (program, the output it prints only if it escaped)."""
    return {
        "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                      "never"),
        "fork_count": ("import os, time\nn = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n"
                       "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n"
                       "        os._exit(0)\n    n += 1\nprint('escaped' if n == 200 else n)", "escaped"),
        "infinite_loop": ("while True:\n    pass", "never"),
        "memory_bomb": ("chunks = []\nfor _ in range(32):\n    chunks.append(bytearray(64 << 20))\n"
                        "print('escaped')", "escaped"),
        "huge_file": ("with open('huge.bin', 'wb') as f:\n    for _ in range(1024):\n"
                      "        f.write(b'x' * (1 << 20))\nprint('escaped')", "escaped"),
        # Prints 'escaped' if a write into the parent's private dirs worked; writes to /tmp and the
        # like may land in the sandbox's own tmpfs, so for those only the host's view counts.
        "write_outside": (f"done = []\nfor path in {ctx['targets'] + ctx['shared_targets']!r}:\n    try:\n"
                          "        open(path, 'w').write('pwned')\n        done.append(path)\n"
                          f"    except OSError:\n        pass\nprint('escaped' if set(done) & set({ctx['targets']!r})"
                          " else 'contained')", "escaped"),
        "read_env_secret": ("import os, glob\nfound = [v for k, v in os.environ.items() if k == 'KIMI_FAKE_SECRET']\n"
                            "for p in glob.glob('/proc/*/environ'):\n    try:\n        data = open(p, 'rb').read()\n"
                            "    except OSError:\n        continue\n    for item in data.split(b'\\0'):\n"
                            "        if item.startswith(b'KIMI_FAKE_SECRET='):\n"
                            "            found.append(item.split(b'=', 1)[1].decode())\n"
                            "print(found[0] if found else 'contained')", ctx["secret"]),
        "network": ("import socket\ns = socket.create_connection(('127.0.0.1', %d), timeout=1)\n"
                    "print(s.recv(100).decode().strip())" % ctx["port"], ctx["greeting"]),
        "kill_parent": ("import os, signal\ntry:\n    os.kill(%d, signal.SIGKILL)\n    print('escaped')\n"
                        "except OSError:\n    for pid in (%d, os.getppid()):\n        if pid > 1:\n"
                        "            try:\n                os.kill(pid, signal.SIGKILL)\n"
                        "            except OSError:\n                pass\n    print('contained')"
                        % (ctx["victim"], os.getpid()), "escaped"),
        "stdout_flood": ("import sys\nwhile True:\n    sys.stdout.write('x' * (1 << 20))", "x"),
        "sleep_past_limit": ("import time\ntime.sleep(30)\nprint('late')", "late"),
    }


NEEDS = {"network": ("network", lambda iso: iso.network),
         "kill_parent": ("process", lambda iso: iso.processes),
         "read_env_secret": ("process (/proc/<parent>/environ)", lambda iso: iso.processes),
         "write_outside": ("filesystem or user", lambda iso: iso.filesystem or iso.separate_user)}
"""Cases a backend contains only with that isolation (the rlimit fallback run by a normal user lacks them)."""


class Listener:
    """A TCP server on 127.0.0.1 that greets whoever connects, and counts them."""

    def __init__(self, greeting: str) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port, self.greeting, self.accepted = self.sock.getsockname()[1], greeting, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.sendall(f"{self.greeting}\n".encode())
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def hostile_run(sandbox, tmp_path_factory):
    """All hostile programs in one parallel batch (2 workers), plus what the host saw afterwards."""
    token = secrets.token_hex(6)
    private = [str(tmp_path_factory.mktemp("parent") / "pwned.txt"), str(REPO / f"pwned_{token}.txt")]
    shared = []  # world-writable dirs: only a filesystem-isolating backend keeps them from the host
    if sandbox.isolation.filesystem:
        shared = [f"/tmp/pwned_{token}.txt", f"/var/tmp/pwned_{token}.txt", f"/dev/shm/pwned_{token}.txt"]
    targets = private + shared
    server = Listener(greeting=f"hello-{token}")
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    secret = f"hunter2-{token}"
    os.environ["KIMI_FAKE_SECRET"] = secret
    try:
        ctx = dict(targets=private, shared_targets=shared, secret=secret, port=server.port, greeting=server.greeting, victim=victim.pid)
        cases = {name: case for name, case in hostile_programs(ctx).items()
                 if name not in NEEDS or NEEDS[name][1](sandbox.isolation)}
        problems = [stdio_problem(f"hostile-{n}", ("", expected)) for n, (_, expected) in cases.items()]
        verify = CodeVerifier(sandbox, TIGHT, workers=2)
        outcomes = verify.outcomes([fence(code) for code, _ in cases.values()], problems)
        host = dict(victim_alive=victim.poll() is None, accepted=server.accepted,
                    written=[t for t in targets if os.path.exists(t)],
                    leftovers=[tasks_of_uid(DEFAULT_UID_BASE + s) for s in range(2)] if os.geteuid() == 0 else [])
        yield dict(zip(cases, outcomes)), host, verify.pop_stats()
    finally:
        del os.environ["KIMI_FAKE_SECRET"]
        victim.kill()
        victim.wait()
        server.close()
        for t in targets:
            if os.path.exists(t):
                os.remove(t)


HOSTILE = ["fork_bomb", "fork_count", "infinite_loop", "memory_bomb", "huge_file", "write_outside",
           "read_env_secret", "network", "kill_parent", "stdout_flood", "sleep_past_limit"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_program_scores_zero_and_is_contained(hostile_run, sandbox, name):
    outcomes, host, _ = hostile_run
    if name not in outcomes:
        pytest.skip(f"{sandbox.name} as uid {os.geteuid()} has no {NEEDS[name][0]} isolation: "
                    f"{sandbox.isolation.summary()}")
    outcome = outcomes[name]
    assert outcome.score == 0.0, f"{name} escaped: {outcome}"
    expected = {"fork_bomb": {"timeout", "error"}, "infinite_loop": {"timeout", "error"},
                "stdout_flood": {"output_limit"}, "sleep_past_limit": {"timeout"},
                "memory_bomb": {"error"}, "huge_file": {"error"}}
    if name in expected:
        assert set(outcome.verdicts) <= expected[name], outcome
    assert host["victim_alive"] and host["accepted"] == 0 and host["written"] == []
    assert all(n == 0 for n in host["leftovers"]), f"sandbox users still own tasks: {host['leftovers']}"


def test_hostile_batch_counted_in_stats(hostile_run):
    outcomes, _, stats = hostile_run
    assert stats["responses"] == len(outcomes) and stats["all_passed"] == 0
    assert stats["runs"] == len(outcomes) and stats["tests_passed"] == 0
    assert stats["output_limit"] == 1 and stats["timeout"] >= 1


def test_parent_survives(hostile_run):
    assert os.getppid() > 0 and sys.executable  # still here, still our interpreter


def test_verifier_options_from_config_reach_the_factory_and_bad_ones_name_the_key():
    from kimi_rl.config import ConfigError
    from kimi_rl.config.loader import load_config
    from kimi_rl.rewards import make_verifier

    cfg = load_config(["task=code", "data.verifier_options={backend: rlimit, workers: 1, fraction: true, wall_s: 3}"])
    v = make_verifier(cfg.data.verifier, cfg.data.verifier_options)
    assert (v.fraction, v.workers, v.limits.wall_s) == (True, 1, 3)
    with pytest.raises(ConfigError, match="data.verifier_options.*unknown option.*bogus"):
        make_verifier("code", {"bogus": 1})
    with pytest.raises(ConfigError, match="data.verifier_options.*timeout_s"):
        make_verifier("math", {"bogus": 1})


# ---------------------------------------------------------------- RL refuses a weak sandbox


def test_allow_weak_and_purpose_errors_name_the_option():
    from kimi_rl.config import ConfigError
    from kimi_rl.rewards import make_verifier

    with pytest.raises(ValueError, match="option 'allow_weak' must be true or false, got 'yes'"):
        code_verifier(allow_weak="yes")
    with pytest.raises(ValueError, match="purpose must be one of eval, rl, got 'train'"):
        code_verifier(purpose="train")
    with pytest.raises(ConfigError, match=r"data.verifier_options .*'allow_weak': 'yes'.*must be true or false"):
        make_verifier("code", {"allow_weak": "yes"})


@pytest.fixture
def no_bwrap():
    """bwrap registered as a backend that cannot run (user namespaces disabled), restored afterwards."""
    class NoBwrap:
        def __init__(self, **_):
            raise SandboxUnavailable("user namespaces disabled (test)")

    SANDBOXES.unregister("bwrap")
    SANDBOXES.register("bwrap", NoBwrap)
    yield
    SANDBOXES.unregister("bwrap")
    SANDBOXES.register_lazy("bwrap", "kimi_rl.sandbox.bwrap:BwrapSandbox")


def test_rl_refuses_the_rlimit_fallback_unless_allow_weak(no_bwrap):
    from kimi_rl.config import ConfigError
    from kimi_rl.rewards import make_verifier

    with pytest.raises(ConfigError, match="data.verifier_options.*allow_weak is false and this is RL training: "
                                          "backend=auto: bwrap cannot run here .user namespaces disabled"):
        make_verifier("code", {"purpose": "rl", "workers": 1})
    with pytest.raises(ValueError, match="backend=rlimit does not contain programs.*set allow_weak: true"):
        code_verifier(backend="rlimit", purpose="rl", workers=1)
    try:
        weak = code_verifier(purpose="rl", allow_weak=True, workers=1)
        evaluating = code_verifier(workers=1)  # evaluation takes the logged fallback as before
    except SandboxUnavailable as err:
        pytest.skip(f"rlimit unavailable here: {err}")
    assert weak.sandbox.name == evaluating.sandbox.name == "rlimit"


def test_rl_takes_bwrap_without_allow_weak():
    try:
        verify = code_verifier(backend="bwrap", purpose="rl", workers=1)
    except SandboxUnavailable as err:
        pytest.skip(f"bwrap unavailable here: {err}")
    assert verify.sandbox.name == "bwrap" and verify.sandbox.isolation.contained


def test_a_harness_that_misjudges_fails_at_start():
    class Mute:  # runs nothing, says ok: every assert test would come out 'error'
        name, python = "mute", "python3"

        def run(self, files, argv, stdin, limits, slot=0):
            return RunResult("ok", 0, "", "", 0.0)

    with pytest.raises(SandboxUnavailable, match="harness does not work in the mute sandbox.*'error', 'error'"):
        check_harness(Mute())


def test_harness_verdict_needs_the_token_once_and_last():
    assert harness_verdict("noise\nab12 pass\n", "ab12") == "pass"
    assert harness_verdict("ab12 wrong\n", "ab12") == "wrong"
    assert harness_verdict("ab12 pass\nafter\n", "ab12") == "error"  # not last
    assert harness_verdict("ab12 pass\nab12 pass\n", "ab12") == "error"  # twice: someone else wrote one
    assert harness_verdict("cd34 pass\n", "ab12") == "error"
