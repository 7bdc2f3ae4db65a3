"""The fallback backend: a subprocess in a new session with resource limits, for machines without bwrap.

Weaker than the paper's containers: as root it adds a slot uid and net/pid/ipc namespaces; else only rlimits.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

from kimi_rl.sandbox.limits import Isolation, Limits, RunResult, SandboxUnavailable
from kimi_rl.sandbox.process import (DEFAULT_UID_BASE, execute, prlimit_argv, resolve_python,
                                     scratch_dir, setpriv_argv, tasks_of_uid, tool)


class RlimitSandbox:
    """prlimit + a new session, run in a fresh host temp directory.

    As root: each slot runs as its own uid (files of other users read-only, the parent not signallable,
    its own process count) inside new network, pid and ipc namespaces when the kernel allows
    (``unshare``). As a normal user: the caller's uid, so the program can read and write whatever
    the caller can and reach the network: use it only for trusted code or behind another boundary.
    """

    name = "rlimit"

    def __init__(self, python: str | None = None, uid_base: int = DEFAULT_UID_BASE) -> None:
        self._prlimit = tool("prlimit")
        self._root = os.geteuid() == 0
        self._uid_base = uid_base
        self._namespaces: list[str] = []
        self.python = resolve_python(python, other_user=self._root)
        if self._root:
            self._setpriv = tool("setpriv")
            self._namespaces = [tool("unshare"), "--net", "--ipc", "--pid", "--fork", "--kill-child", "--"]
            if not self._probe():
                self._namespaces = []  # e.g. a container without CAP_SYS_ADMIN: uid switch only
        if not self._probe():
            raise SandboxUnavailable("rlimit probe failed: cannot run a Python program with limits")
        isolated = bool(self._namespaces)
        user = f"uid {uid_base}+slot (from root)" if self._root else f"uid {os.geteuid()} (the caller)"
        self.isolation = Isolation(network=isolated, filesystem=False, processes=self._root,
                                   separate_user=self._root, user=user)

    def _probe(self) -> bool:
        probe = self.run({"probe.py": "print('ready')"}, [self.python, "-I", "-S", "probe.py"], b"",
                         Limits(wall_s=20.0))
        return probe.ok and probe.stdout.strip() == "ready"

    def run(self, files: Mapping[str, str], argv: Sequence[str], stdin: bytes, limits: Limits,
            slot: int = 0) -> RunResult:
        uid = self._uid_base + slot if self._root else None
        with scratch_dir(files, owner=uid) as work:
            return execute(self._prefix(limits, uid) + list(argv), cwd=work, stdin=stdin, limits=limits,
                           monitor=bool(self._namespaces))

    def _prefix(self, limits: Limits, uid: int | None) -> list[str]:
        if uid is None:
            nproc = tasks_of_uid(os.geteuid()) + limits.processes
            return prlimit_argv(self._prlimit, limits, nproc)
        nproc = tasks_of_uid(uid) + limits.processes
        return (self._namespaces + setpriv_argv(self._setpriv, uid, no_new_privs=True)
                + prlimit_argv(self._prlimit, limits, nproc))
