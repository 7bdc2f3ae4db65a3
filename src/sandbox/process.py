"""Spawning one confined command: rlimits via prlimit(1), user switch via setpriv(1), output cap, deadline.

Shared by the backends. Helpers are exec'd (not a preexec_fn) so spawning stays safe from worker threads.
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from kimi_rl.sandbox.limits import Limits, RunResult, SandboxUnavailable

SANDBOX_PATH = "/usr/bin:/bin"
"""The only environment variable a sandboxed program sees."""
DEFAULT_UID_BASE = 61000
"""When the caller is root, slot ``i`` runs as uid/gid ``DEFAULT_UID_BASE + i``: not root, and a
process count (RLIMIT_NPROC) of its own."""
_MB = 1 << 20


def tool(name: str) -> str:
    """Absolute path of a helper binary, or SandboxUnavailable naming the package to install."""
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
    if path is None:
        pkg = "bubblewrap" if name == "bwrap" else "util-linux"
        raise SandboxUnavailable(f"'{name}' not found on PATH (Debian/Ubuntu: apt-get install -y {pkg})")
    return path


def prlimit_argv(prlimit: str, limits: Limits, nproc: int) -> list[str]:
    """``prlimit`` lowering every limit (soft = hard, CPU hard one second later) then exec'ing the rest."""
    cpu = limits.cpu_seconds
    fsize = limits.file_size_mb * _MB
    return [prlimit, f"--as={limits.memory_mb * _MB}", f"--cpu={cpu}:{cpu + 1}", f"--nproc={nproc}",
            f"--fsize={fsize}", f"--nofile={limits.open_files}", "--core=0", "--"]


def setpriv_argv(setpriv: str, uid: int, no_new_privs: bool) -> list[str]:
    """Drop root: real and effective uid/gid ``uid``, no supplementary groups, no capabilities."""
    out = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    return out + (["--no-new-privs", "--"] if no_new_privs else ["--"])


def pids_of_uid(uid: int, alive: bool = False) -> list[int]:
    """Processes whose real uid is ``uid`` (from /proc/<pid>/status: a non-dumpable process's /proc
    directory belongs to root, so its owner would miss it); ``alive``: zombies left out."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                status = dict(line.split(":", 1) for line in f if line[:4] in ("Stat", "Uid:"))
            if int(status["Uid"].split()[0]) == uid and not (alive and status["State"].split()[0] in "ZX"):
                out.append(int(entry.name))
        except (OSError, ValueError, IndexError, KeyError):  # exited meanwhile
            continue
    return out


def tasks_of_uid(uid: int) -> int:
    """Processes and threads of real uid ``uid`` now (what RLIMIT_NPROC counts)."""
    count = 0
    for pid in pids_of_uid(uid):
        try:
            count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def kill_uid(uid: int, timeout_s: float = 2.0) -> int:
    """SIGKILL every process of real uid ``uid`` until none is left (root only: a slot user owns nothing
    between runs, so whatever it owns belongs to the run that just ended). Returns how many were found."""
    found: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = pids_of_uid(uid, alive=True)  # a zombie is dead already; its reaper may be slow
        if not pids:
            break
        found.update(pids)
        for pid in pids:
            _signal(pid)
        time.sleep(0.005)
    return len(found)


def remove_files_of(uid: int, dirs: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
    """Delete the entries of ``dirs`` owned by ``uid`` (what a slot user left in shared world-writable
    directories) except ``keep``; returns their paths."""
    removed = []
    keep = {os.path.realpath(k) for k in keep}
    for folder in dirs:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid or os.path.realpath(entry.path) in keep:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    remove_tree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(entry.path)
            except OSError:
                continue
    return removed


def reachable_by_others(path: str) -> bool:
    """True when a user with no relation to the owner can run ``path`` (o+x on it and every parent)."""
    p = Path(path)
    for part in [p, *p.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def resolve_python(python: str | None, other_user: bool) -> str:
    """The interpreter for sandboxed programs: ``python`` if given, else this one, else the system
    ``python3``; when programs run as another user it must be reachable by that user."""
    if python is not None:
        candidates = [python]
    else:
        candidates = [os.path.realpath(sys.executable)]
        for name in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")):
            if name and os.path.exists(name):
                candidates.append(os.path.realpath(name))
    for cand in candidates:
        if os.access(cand, os.X_OK) and (not other_user or reachable_by_others(cand)):
            return cand
    why = " by other users (a parent directory lacks o+x)" if other_user else ""
    raise SandboxUnavailable(f"no Python interpreter usable{why}; tried {candidates}; pass python=<path>")


@contextmanager
def scratch_dir(files: Mapping[str, str], owner: int | None) -> Iterator[Path]:
    """A fresh host directory holding ``files`` (world-readable so a dropped user can read them);
    ``owner`` gets the directory itself (the rlimit backend's writable cwd). Removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="kimi-sbx-"))
    try:
        for name, text in files.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"sandbox file name must be a plain name, got {name!r}")
            (root / name).write_text(text)
            (root / name).chmod(0o644)
        if owner is not None:
            os.chown(root, owner, owner)
        root.chmod(0o755 if owner is None else 0o700)
        yield root
    finally:
        remove_tree(str(root))


def remove_tree(top: str) -> None:
    """rmtree that also removes what a program chmod-ed to 000 (each directory made traversable before the
    walk enters it; symlinks never followed), and never touches anything outside ``top``."""
    top = os.path.realpath(top)
    if not os.path.isdir(top) or os.path.islink(top):
        return
    try:
        os.chmod(top, 0o700)
    except OSError:
        pass
    for dirpath, dirnames, _ in os.walk(top):  # top-down: dirnames are fixed up before they are walked
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                try:
                    os.chmod(path, 0o700)
                except OSError:
                    pass
    shutil.rmtree(top, ignore_errors=True)


def execute(argv: list[str], *, cwd: Path, stdin: bytes, limits: Limits,
            monitor: bool = False) -> RunResult:
    """Run ``argv`` in its own session; kill the whole group at the deadline, on too much output,
    and in any case once the main process is done (stragglers do not outlive the run).
    ``monitor``: the leader (bwrap, unshare) only waits on a child that holds the program."""
    start = time.monotonic()
    with _read_only_file(stdin) as stdin_file:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=stdin_file, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={"PATH": SANDBOX_PATH},
                                start_new_session=True, close_fds=True)
    try:
        out, err, status = _collect(proc, start + limits.wall_s, limits.output_bytes)
    finally:
        _kill_group(proc, monitor)
        returncode = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if status is None:
        status = "ok" if returncode == 0 else "error"
    cap = limits.output_bytes
    return RunResult(status, returncode, _text(out, cap), _text(err, cap), time.monotonic() - start)


def _text(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")


@contextmanager
def _read_only_file(data: bytes) -> Iterator:
    """An unlinked file holding ``data``, opened read-only (the program cannot write through fd 0)."""
    fd, path = tempfile.mkstemp(prefix="kimi-sbx-stdin-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with open(path, "rb") as f:
            os.unlink(path)
            yield f
    finally:
        if os.path.exists(path):
            os.unlink(path)


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Read stdout/stderr until both close; status ``timeout``/``output_limit`` when cut short."""
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out: bytearray(), err: bytearray()}
    total = 0
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(bufs[out]), bytes(bufs[err]), "timeout"
            # exit checked before the select: whatever the main process wrote before exiting is then in the
            # pipe, so an empty select means none of its output is left (checked after, a last write between
            # an empty select and the check was lost: the harness's verdict line, scoring a right answer 0)
            exited = _exited(proc.pid)
            events = sel.select(timeout=0 if exited else min(left, 0.2))
            if not events and exited:
                break  # main process gone, a straggler holds the pipe: do not wait for it
            for key, _ in events:
                data = os.read(key.fd, 1 << 16)
                if not data:
                    sel.unregister(key.fd)
                    continue
                bufs[key.fd] += data
                total += len(data)
                if total > cap:
                    return bytes(bufs[out]), bytes(bufs[err]), "output_limit"
    status = None if _wait_exit(proc.pid, deadline) else "timeout"
    return bytes(bufs[out]), bytes(bufs[err]), status


def _exited(pid: int) -> bool:
    """Has ``pid`` exited? Leaves it a zombie, so its process group id cannot be reused yet."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _wait_exit(pid: int, deadline: float) -> bool:
    while not _exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _kill_group(proc: subprocess.Popen, monitor: bool) -> None:
    """SIGKILL the run: for a monitor leader first its children (a namespace's init: the whole
    namespace dies with it), so that the monitor reaps them instead of leaving zombies for the
    host's init, which would count against the sandbox user's process limit; then the session
    group, whose id is still ours since the leader is not reaped yet."""
    if monitor and not _exited(proc.pid):
        for child in _children(proc.pid):
            _signal(child)
        _wait_exit(proc.pid, time.monotonic() + 1.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:  # kernel without CONFIG_PROC_CHILDREN: scan parent pids
        out = []
        for entry in os.scandir("/proc"):
            try:
                if entry.name.isdigit() and _parent_pid(entry.name) == pid:
                    out.append(int(entry.name))
            except OSError:
                continue
        return out


def _parent_pid(pid: str) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _signal(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
