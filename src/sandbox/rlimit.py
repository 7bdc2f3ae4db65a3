"""The fallback backend, for machines without bwrap: a confined subprocess (rlimits, seccomp, and as root a slot
uid in fresh pid/net/ipc/uts/mount namespaces with bounded tmpfs). Weaker than the paper's containers:
host files stay readable, so RL refuses it unless ``allow_weak`` (see rewards/code.py).
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Mapping, Sequence

from kimi_rl.sandbox import confine
from kimi_rl.sandbox.cgroup import MemoryCgroups
from kimi_rl.sandbox.limits import Isolation, Limits, RunResult, SandboxUnavailable
from kimi_rl.sandbox.process import (DEFAULT_UID_BASE, execute, kill_uid, remove_files_of, resolve_python,
                                     scratch_dir, tasks_of_uid, tool)

CONFINE = Path(confine.__file__).read_text()
"""confine.py, run with ``python -c`` as the last step before the program."""
_NAMESPACES = ["--net", "--ipc", "--uts", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc", "--"]
_INODES_PER_MB = 256
"""tmpfs inode cap (empty files cost kernel memory that ``size`` does not count)."""
PROBE = """import ctypes, os, socket, sys
want = sys.argv[1:]
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
        os._exit(1)
    except OSError:
        os._exit(0)
setsid_denied = os.waitpid(pid, 0)[1] == 0
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    ip_denied = False
except OSError:
    ip_denied = True
seen = len([p for p in os.listdir('/proc') if p.isdigit()])
try:
    open('/kimi-sbx-probe', 'w').close()
    os.unlink('/kimi-sbx-probe')
    root_ro = False
except OSError:
    root_ro = True
userns_denied = ctypes.CDLL(None).unshare(0x10000000) != 0
checks = {'seccomp': setsid_denied and ip_denied and userns_denied, 'namespaces': seen < 10 and root_ro}
print('ready' if all(checks[w] for w in want) else f'missing {checks}')
"""
"""Prints ready when the confinement asked for (argv: seccomp, namespaces) really holds."""


class RlimitSandbox:
    """A subprocess confined by confine.py, in a fresh host temp directory.

    Modes, most confined first; the first whose probe passes is used:

    * root, namespaces: ``unshare`` pid/net/ipc/uts/mount namespaces (the run's /proc shows only itself),
      every mount read-only, size-limited tmpfs on /tmp (holding the cwd), /var/tmp and /dev/shm, a slot
      uid, rlimits, seccomp;
    * root, no namespaces (e.g. a container without CAP_SYS_ADMIN): slot uid, rlimits, seccomp; after each
      run the slot uid's processes are killed and its files in /tmp, /var/tmp, /dev/shm removed (so two
      processes on one host need different ``uid_base``);
    * not root: the caller's uid, rlimits, seccomp (no leaving the process group, so the group kill reaches
      every process; no IP sockets; no ptrace; signals only to its own group).

    Without seccomp (another architecture, an old kernel) only rlimits remain. ``isolation.gaps`` says
    what each mode leaves open; make_sandbox logs it as a warning.
    """

    name = "rlimit"

    def __init__(self, python: str | None = None, uid_base: int = DEFAULT_UID_BASE,
                 namespaces: bool = True) -> None:
        """``namespaces=False`` skips the namespace mode (hosts where ``unshare`` misbehaves; tests)."""
        self._root = os.geteuid() == 0
        self._uid_base = uid_base
        self.python = resolve_python(python, other_user=self._root)
        self._cgroups = MemoryCgroups.find()
        if self._cgroups is not None:
            weakref.finalize(self, self._cgroups.close)
        unshare = _optional_tool("unshare") if self._root and namespaces else None
        modes = [(True, True), (False, True), (False, False)] if unshare else [(False, True), (False, False)]
        for namespaces, seccomp in modes:
            self._unshare = [unshare, *_NAMESPACES] if namespaces else []
            self._seccomp = seccomp
            if self._probe([w for w, on in (("namespaces", namespaces), ("seccomp", seccomp)) if on]):
                break
        else:
            raise SandboxUnavailable(f"rlimit probe failed: cannot run a confined Python program "
                                     f"({self._last_probe})")
        user = f"uid {uid_base}+slot (from root)" if self._root else f"uid {os.geteuid()} (the caller)"
        self.isolation = Isolation(network=bool(self._unshare) or self._seccomp, filesystem=False,
                                   processes=bool(self._unshare), separate_user=self._root, user=user,
                                   gaps=tuple(self._gaps()),
                                   scratch=confine.TMPFS_DIRS if self._unshare else (),
                                   memory_cgroup=self._cgroups is not None)

    def _gaps(self) -> list[str]:
        gaps = ["host files are readable wherever the program's user may read (the problems' test data too, "
                "if world-readable)"]
        if not self._root:
            gaps.append("runs as the caller: it may read and write the caller's files, read /proc/<pid>/environ "
                        "of the caller's processes and, where ptrace rules allow, their memory; files it writes "
                        "outside its work dir persist")
        elif not self._unshare:
            gaps.append("no namespaces: /proc shows every host process's command line; it writes to shared "
                        "world-writable dirs (its files in /tmp, /var/tmp, /dev/shm are removed after the run)")
        if not self._seccomp:
            gaps.append("no seccomp filter: " + ("IP sockets open (loopback services reachable), " if not self._unshare
                                                 else "") + "a process can leave the process group (setsid)"
                        + ("" if self._root else " and outlive the run"))
        elif not self._unshare:
            gaps.append("Unix-domain sockets of the host reachable (no network namespace)")
        if self._cgroups is None:
            gaps.append("no memory cgroup: RAM is bounded per process (RLIMIT_AS), not for the run as a whole")
        return gaps

    def _probe(self, want: list[str]) -> bool:
        probe = self.run({"probe.py": PROBE}, [self.python, "-I", "-S", "probe.py", *want], b"",
                         Limits(wall_s=20.0))
        self._last_probe = f"{probe.status}, exit {probe.returncode}: {(probe.stdout + probe.stderr).strip()[:500]}"
        return probe.ok and probe.stdout.strip() == "ready"

    def run(self, files: Mapping[str, str], argv: Sequence[str], stdin: bytes, limits: Limits,
            slot: int = 0) -> RunResult:
        uid = self._uid_base + slot if self._root else None
        with scratch_dir(files, owner=None if self._unshare else uid) as work:
            try:
                return execute(self._prefix(limits, uid, slot) + list(argv), cwd=work, stdin=stdin,
                               limits=limits, monitor=bool(self._unshare))
            finally:
                self._sweep(uid, slot, work)

    def _sweep(self, uid: int | None, slot: int, work: Path) -> None:
        """What the group kill in execute() cannot reach: a slot uid owns nothing between runs."""
        if self._cgroups is not None:
            self._cgroups.kill(slot)
        if uid is not None and not self._unshare:  # with namespaces, the pid namespace ended them all
            kill_uid(uid)
            remove_files_of(uid, confine.TMPFS_DIRS, keep=[str(work)])

    def _prefix(self, limits: Limits, uid: int | None, slot: int) -> list[str]:
        join = self._cgroups.prepare(slot, limits.group_memory_bytes) if self._cgroups is not None else []
        nproc = tasks_of_uid(os.geteuid() if uid is None else uid) + limits.processes
        config = {"uid": uid, "seccomp": self._seccomp, "rlimits": rlimits(limits, nproc)}
        if self._unshare:
            size = limits.disk_mb << 20
            config["mounts"] = {"size": size, "inodes": limits.disk_mb * _INODES_PER_MB}
        return join + self._unshare + [self.python, "-I", "-S", "-c", CONFINE, *confine.config_args(config), "--"]


def rlimits(limits: Limits, nproc: int) -> dict:
    """Limits -> confine.py's ``rlimits`` (soft = hard; CPU hard one second later: SIGXCPU, then SIGKILL)."""
    cpu = limits.cpu_seconds
    return {"AS": limits.memory_mb << 20, "CPU": [cpu, cpu + 1], "NPROC": nproc,
            "FSIZE": limits.file_size_mb << 20, "NOFILE": limits.open_files, "CORE": 0}


def _optional_tool(name: str) -> str | None:
    try:
        return tool(name)
    except SandboxUnavailable:
        return None
