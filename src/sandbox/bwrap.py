"""The default backend: bubblewrap namespaces (user, pid, net, ipc, uts), read-only system files, tmpfs cwd.

Where the paper starts containers, this starts a bwrap process tree; root callers first drop to a slot uid.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from kimi_rl.sandbox.limits import Isolation, Limits, RunResult, SandboxUnavailable
from kimi_rl.sandbox.process import (DEFAULT_UID_BASE, SANDBOX_PATH, execute, prlimit_argv,
                                     resolve_python, scratch_dir, setpriv_argv, tasks_of_uid, tool)

WORKDIR = "/box"
"""The program's working directory inside the sandbox (a size-limited tmpfs)."""
_HELPER_TASKS = 1
"""bwrap's own monitor process, counted in the sandbox user's RLIMIT_NPROC besides the program."""


class BwrapSandbox:
    """bubblewrap: the program sees /usr (and the interpreter's prefix) read-only, a fresh /proc and
    /dev, a private tmpfs cwd and /tmp, no network, no host processes, an empty environment.

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
        user = f"uid {uid_base}+slot (from root)" if self._root else f"uid {os.geteuid()} (the caller)"
        self.isolation = Isolation(network=True, filesystem=True, processes=True, separate_user=self._root,
                                   user=user)
        probe = self.run({"probe.py": "print('ready')"}, [self.python, "-I", "-S", "probe.py"], b"",
                         Limits(wall_s=20.0))
        if not probe.ok or probe.stdout.strip() != "ready":
            raise SandboxUnavailable(f"bwrap probe failed ({probe.status}, exit {probe.returncode}): "
                                     f"{probe.stderr.strip()[:500]}")

    def run(self, files: Mapping[str, str], argv: Sequence[str], stdin: bytes, limits: Limits,
            slot: int = 0) -> RunResult:
        with scratch_dir(files, owner=None) as host_dir:
            cmd = self._prefix(limits, slot) + self._bwrap_argv(host_dir, sorted(files), limits) + list(argv)
            return execute(cmd, cwd=host_dir, stdin=stdin, limits=limits, monitor=True)

    def _prefix(self, limits: Limits, slot: int) -> list[str]:
        """setpriv (root only) and prlimit before bwrap; limits are inherited by everything inside."""
        if self._root:
            uid = self._uid_base + slot
            return setpriv_argv(self._setpriv, uid, no_new_privs=False) + prlimit_argv(
                self._prlimit, limits, tasks_of_uid(uid) + limits.processes + _HELPER_TASKS)
        nproc = tasks_of_uid(os.geteuid()) + limits.processes + _HELPER_TASKS
        return prlimit_argv(self._prlimit, limits, nproc)

    def _bwrap_argv(self, host_dir: Path, names: list[str], limits: Limits) -> list[str]:
        size = str(limits.disk_mb << 20)
        args = [self._bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1",
                "--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        prefix = str(Path(self.python).parent.parent)
        if not prefix.startswith("/usr"):
            args += ["--ro-bind", prefix, prefix]
        args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
                 "--proc", "/proc", "--dev", "/dev",
                 "--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", WORKDIR]
        for name in names:
            args += ["--ro-bind", str(host_dir / name), f"{WORKDIR}/{name}"]
        return args + ["--chdir", WORKDIR, "--"]
