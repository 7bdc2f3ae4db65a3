"""Sandbox backends: limits enforced, status classified, environment empty, isolation as advertised.

Backends that cannot run here are skipped with the reason (CI installs bubblewrap, so bwrap runs there).
"""
from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from kimi_rl.sandbox import SANDBOXES, Limits, SandboxUnavailable, WeakSandbox, make_sandbox, parallel_map
from kimi_rl.sandbox.process import pids_of_uid, remove_tree, tasks_of_uid, tool

TIGHT = Limits(wall_s=2.0, cpu_s=1.0, memory_mb=128, processes=8, file_size_mb=1, open_files=32,
               output_bytes=64 << 10, disk_mb=8)
ROOT = os.geteuid() == 0
UID_BASE = 66000 + 8 * (os.getpid() % 400)
"""Sandbox users of this file's own (tests/tasks/test_make_tests.py takes 62000-65199): the leftover checks below
count only this file's runs, not what the other sandbox files' runs left behind as the default users (61000+)."""
REAP_GRACE_S = 10.0
"""How long a dead process of a run may wait for the host's init to reap it (a zombie still counts in the slot
user's process limit; an init that reaps on a tick was seen to keep one ~1.8 s)."""


@pytest.fixture(scope="module", params=["bwrap", "rlimit"])
def sandbox(request):
    try:
        return make_sandbox(request.param, uid_base=UID_BASE)
    except SandboxUnavailable as err:
        pytest.skip(f"sandbox backend '{request.param}' unavailable here: {err}")


def run_py(sandbox, code: str, stdin: bytes = b"", limits: Limits = TIGHT):
    return sandbox.run({"main.py": code}, [sandbox.python, "-I", "-S", "main.py"], stdin, limits)


def assert_no_leftovers():
    """Slot users own no process after a run (root only: otherwise programs run as the caller): none alive at once,
    and no zombie either once the host's init had ``REAP_GRACE_S`` to reap what the run left it (the rlimit backend
    without namespaces kills a program's stragglers, whose parent is gone: init reaps them in its own time)."""
    if not ROOT:
        return
    uids = [UID_BASE + slot for slot in range(2)]
    assert [pids_of_uid(uid, alive=True) for uid in uids] == [[], []], describe(uids)
    deadline = time.monotonic() + REAP_GRACE_S
    while any(tasks_of_uid(uid) for uid in uids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [tasks_of_uid(uid) for uid in uids] == [0, 0], describe(uids)


def describe(uids: list[int]) -> str:
    """Each process of ``uids``: pid, name, state and parent (a zombie whose parent is 1 waits for the host's init)."""
    lines = []
    for uid in uids:
        for pid in pids_of_uid(uid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            except OSError:
                continue
            lines.append(f"uid {uid} pid {pid} {fields.get('Name')} {fields.get('State')} ppid {fields.get('PPid')}")
    return "; ".join(lines) or "none now"


def test_limits_reject_non_positive_values():
    with pytest.raises(ValueError, match="wall_s"):
        Limits(wall_s=0)
    with pytest.raises(ValueError, match="processes"):
        Limits(processes=-1)


def test_problem_limits_set_cpu_wall_and_memory():
    lim = Limits(wall_s=10, cpu_s=5, memory_mb=512).for_problem(2.0, 128)
    assert (lim.cpu_s, lim.wall_s, lim.memory_mb, lim.cpu_seconds) == (2.0, 5.0, 128, 2)
    assert Limits().for_problem(None, None) == Limits()
    assert Limits(cpu_s=0.2).cpu_seconds == 1  # RLIMIT_CPU counts whole seconds


def test_runs_program_with_stdin_in_a_fresh_writable_dir(sandbox):
    code = ("import os, sys\nopen('scratch.txt', 'w').write('x')\n"
            "print(sys.stdin.read().upper(), sorted(os.listdir('.')))")
    result = run_py(sandbox, code, b"hello")
    assert result.status == "ok" and result.returncode == 0
    assert result.stdout == "HELLO ['main.py', 'scratch.txt']\n"
    second = run_py(sandbox, "import os\nprint(sorted(os.listdir('.')))")
    assert second.stdout == "['main.py']\n"  # the scratch file of the last run is gone


def test_environment_is_empty(sandbox, monkeypatch):
    monkeypatch.setenv("KIMI_FAKE_SECRET", "hunter2-sandbox")
    result = run_py(sandbox, "import os\nprint(sorted(os.environ))\nprint(open('/proc/self/environ').read())")
    assert result.ok
    assert "hunter2" not in result.stdout
    # Python itself adds LC_CTYPE (C.UTF-8 coercion); bwrap's --chdir adds PWD.
    assert set(eval(result.stdout.splitlines()[0])) <= {"PATH", "PWD", "LC_CTYPE"}


def test_the_last_write_before_exit_is_kept_when_the_exit_is_seen_late(sandbox, monkeypatch):
    """The reader sees the program's exit only after the program wrote its last line and exited (the race a
    loaded machine hits: the harness's verdict line was lost once, a right answer scored 0): the line is kept."""
    from kimi_rl.sandbox import process

    def exit_seen_late(pid: int) -> bool:  # blocks until the main process has exited, leaving it a zombie
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        return True

    monkeypatch.setattr(process, "_exited", exit_seen_late)
    # silent for longer than one 0.2 s select, then the one line, then exit
    result = run_py(sandbox, "import time\ntime.sleep(0.6)\nprint('verdict pass')", limits=Limits(wall_s=30.0))
    assert (result.status, result.stdout) == ("ok", "verdict pass\n")
    assert_no_leftovers()


def test_exit_code_and_crash_are_errors(sandbox):
    failed = run_py(sandbox, "import sys\nsys.exit(3)")
    assert (failed.status, failed.returncode) == ("error", 3)
    crashed = run_py(sandbox, "raise RuntimeError('boom')")
    assert crashed.status == "error" and "RuntimeError: boom" in crashed.stderr


def test_sleep_past_wall_limit_times_out(sandbox):
    result = run_py(sandbox, "import time\ntime.sleep(30)\nprint('late')", limits=TIGHT)
    assert result.status == "timeout" and "late" not in result.stdout
    assert_no_leftovers()


def test_cpu_limit_kills_busy_loop_before_the_wall_limit(sandbox):
    result = run_py(sandbox, "while True:\n    pass", limits=Limits(cpu_s=1, wall_s=30))
    assert result.status == "error" and result.returncode != 0


def test_memory_limit(sandbox):
    result = run_py(sandbox, "x = bytearray(1 << 30)\nprint('allocated')")
    assert result.status == "error" and "MemoryError" in result.stderr


def test_process_limit_bounds_forks(sandbox):
    code = ("import os, time\nn = 0\nfor _ in range(64):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(20)\n        os._exit(0)\n"
            "    n += 1\nprint(n)")
    result = run_py(sandbox, code)
    assert result.ok
    assert 1 <= int(result.stdout) < TIGHT.processes  # the interpreter itself counts as one
    assert_no_leftovers()  # the sleeping children died with the run


def test_file_size_limit(sandbox):
    code = "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (8 << 20))\nprint('wrote')"
    result = run_py(sandbox, code)
    assert result.status == "error" and "wrote" not in result.stdout


def test_output_is_capped(sandbox):
    result = run_py(sandbox, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert result.status == "output_limit"
    assert len(result.stdout) <= TIGHT.output_bytes


def test_host_files_hidden_by_bwrap():
    try:
        sandbox = make_sandbox("bwrap", uid_base=UID_BASE)
    except SandboxUnavailable as err:
        pytest.skip(f"bwrap unavailable here: {err}")
    here = os.path.abspath(__file__)
    code = f"import os\nprint(os.path.exists({here!r}), os.path.exists('/etc/passwd'), os.listdir('/proc')[:0])"
    result = run_py(sandbox, code)
    assert result.stdout == "False False []\n"
    assert sandbox.isolation.network and sandbox.isolation.filesystem and sandbox.isolation.processes


def test_rlimit_reports_its_weaker_isolation():
    try:
        sandbox = make_sandbox("rlimit", uid_base=UID_BASE)
    except SandboxUnavailable as err:
        pytest.skip(f"rlimit unavailable here: {err}")
    iso = sandbox.isolation
    assert iso.filesystem is False and not iso.contained
    assert iso.separate_user is ROOT and (iso.processes is False or ROOT)  # a pid namespace needs root here
    assert "host-visible" in iso.summary() and "NOT isolated: host files are readable" in iso.summary()


def test_auto_falls_back_to_rlimit_with_a_warning(caplog):
    class NoBwrap:
        def __init__(self, **_):
            raise SandboxUnavailable("user namespaces disabled (test)")

    SANDBOXES.unregister("bwrap")
    SANDBOXES.register("bwrap", NoBwrap)
    try:
        with caplog.at_level(logging.WARNING, logger="kimi_rl.sandbox"):
            sandbox = make_sandbox("auto", uid_base=UID_BASE)
    except SandboxUnavailable as err:
        pytest.skip(f"rlimit unavailable here: {err}")
    finally:
        SANDBOXES.unregister("bwrap")
        SANDBOXES.register_lazy("bwrap", "kimi_rl.sandbox.bwrap:BwrapSandbox")
    assert sandbox.name == "rlimit"
    assert "FALLING BACK to rlimit" in caplog.text and "user namespaces disabled (test)" in caplog.text


def test_unknown_backend_lists_valid_names():
    with pytest.raises(KeyError, match="bwrap, rlimit"):
        make_sandbox("docker")


def test_missing_tool_names_the_package():
    with pytest.raises(SandboxUnavailable, match="apt-get install -y util-linux"):
        tool("no-such-sandbox-helper")


def test_parallel_map_keeps_order_and_never_shares_a_slot():
    in_use: set[int] = set()
    lock = threading.Lock()
    clashes = []

    def fn(item: int, slot: int) -> int:
        with lock:
            if slot in in_use:
                clashes.append(slot)
            in_use.add(slot)
        time.sleep(0.002)
        with lock:
            in_use.discard(slot)
        return item * 10 + slot * 0

    assert parallel_map(fn, list(range(20)), workers=3) == [i * 10 for i in range(20)]
    assert clashes == []
    assert parallel_map(lambda x, s: (x, s), [7], workers=4) == [(7, 0)]
    with pytest.raises(ValueError, match="workers"):
        parallel_map(fn, [1], workers=0)


def test_allow_weak_false_refuses_a_sandbox_that_does_not_contain_programs():
    try:
        make_sandbox("rlimit", uid_base=UID_BASE)
    except SandboxUnavailable as err:
        pytest.skip(f"rlimit unavailable here: {err}")
    with pytest.raises(WeakSandbox, match="backend=rlimit does not contain programs") as info:
        make_sandbox("rlimit", uid_base=UID_BASE, allow_weak=False)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SandboxUnavailable)


def test_weak_sandbox_logs_what_it_does_not_isolate(caplog):
    with caplog.at_level(logging.WARNING, logger="kimi_rl.sandbox"):
        try:
            sandbox = make_sandbox("rlimit", uid_base=UID_BASE)
        except SandboxUnavailable as err:
            pytest.skip(f"rlimit unavailable here: {err}")
    assert "sandbox rlimit does NOT contain programs" in caplog.text
    assert all(gap in caplog.text for gap in sandbox.isolation.gaps) and sandbox.isolation.gaps


def test_removing_a_scratch_tree_never_touches_its_parent(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o1777)  # like /tmp
    tree = parent / "run"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    (tree / "sub").chmod(0)  # what a program may do to its files
    remove_tree(str(tree))
    remove_tree(str(tree))  # already gone: nothing to do, and no chmod of the parent on the way
    assert not tree.exists() and oct(parent.stat().st_mode & 0o7777) == "0o1777"


def test_confine_config_round_trips_through_its_arguments():
    from kimi_rl.sandbox.confine import config_args, parse_config

    config = {"uid": 61000, "seccomp": True, "mounts": {"size": 1 << 20, "inodes": 256},
              "rlimits": {"AS": [1 << 29, 1 << 29], "CPU": [2, 3]}}
    assert parse_config(config_args(config)) == config
    assert parse_config(config_args({"seccomp": False})) == {"seccomp": False, "rlimits": {}}
    with pytest.raises(ValueError, match="unknown confine option 'net=1'"):
        parse_config(["net=1"])


def test_memory_cgroup_limit_can_go_down_and_up_between_runs():
    from kimi_rl.sandbox.cgroup import MemoryCgroups

    groups = MemoryCgroups.find()
    if groups is None:
        pytest.skip("no memory cgroup can be made here (needs root or a delegated cgroup)")
    try:
        for limit in (256 << 20, 64 << 20, 512 << 20):
            join = groups.prepare(1, limit)
            name = "memory.max" if groups.version == 2 else "memory.limit_in_bytes"
            assert int((groups.path(1) / name).read_text()) == limit
        assert join[-1] == str(groups.path(1) / "cgroup.procs")
    finally:
        groups.close()
    assert not groups.path(1).exists()
