"""What a sandboxed run may use (Limits), what it returned (RunResult), what a backend isolates.

k1.5 (section 2.6.4) runs code in its own container service; here a backend confines one process tree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Protocol, Sequence


class SandboxUnavailable(RuntimeError):
    """A backend cannot run on this machine (missing binary, namespaces refused, ...)."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits; every sandboxed execution gets all of them."""

    wall_s: float = 10.0
    """Wall-clock seconds before the whole process tree is killed (status ``timeout``)."""
    cpu_s: float = 5.0
    """CPU seconds (RLIMIT_CPU, rounded up to whole seconds): SIGXCPU, then SIGKILL one second later."""
    memory_mb: int = 512
    """Address space per process (RLIMIT_AS)."""
    processes: int = 32
    """Processes and threads the program may have (RLIMIT_NPROC, counted per sandbox user)."""
    file_size_mb: int = 16
    """Largest file a process may write (RLIMIT_FSIZE)."""
    open_files: int = 64
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    output_bytes: int = 4 << 20
    """stdout + stderr captured; more kills the run (status ``output_limit``)."""
    disk_mb: int = 64
    """Size of the writable tmpfs working directory (and of /tmp) where the backend provides one."""

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "processes", "file_size_mb", "open_files",
                     "output_bytes", "disk_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit '{name}' must be positive, got {getattr(self, name)!r}")

    @property
    def cpu_seconds(self) -> int:
        return max(1, math.ceil(self.cpu_s))

    def for_problem(self, time_limit_s: float | None, memory_mb: int | None) -> "Limits":
        """A problem's own limits: CPU time = its time limit; wall = 2 x limit + 1 s, so that a
        machine crowded by parallel runs does not fail a correct program; memory as given."""
        out = self
        if time_limit_s is not None:
            out = replace(out, cpu_s=time_limit_s, wall_s=2 * time_limit_s + 1)
        if memory_mb is not None:
            out = replace(out, memory_mb=memory_mb)
        return out


@dataclass(frozen=True)
class RunResult:
    """One execution. ``status``: ok (exit 0) | error (non-zero exit or a signal) | timeout | output_limit."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Isolation:
    """What a backend really confines, so callers and logs can say so."""

    network: bool
    """No network at all (a fresh network namespace)."""
    filesystem: bool
    """Host files hidden or read-only; only a private scratch directory is writable."""
    processes: bool
    """The parent's processes cannot be signalled or inspected (/proc/<pid>/environ)."""
    separate_user: bool
    """Runs as a user other than the caller, so the caller's private files are out of reach."""
    user: str
    """Who the program runs as."""

    def summary(self) -> str:
        flags = [f"network {'isolated' if self.network else 'OPEN'}",
                 f"filesystem {'isolated' if self.filesystem else 'host-visible, user-writable paths writable'}",
                 f"processes {'isolated' if self.processes else 'can signal the parent'}",
                 f"runs as {self.user}"]
        return "; ".join(flags)


class Sandbox(Protocol):
    """A backend: runs ``argv`` in a fresh working directory holding ``files``."""

    name: str
    python: str
    """Interpreter path usable inside the sandbox as ``argv[0]``."""
    isolation: Isolation

    def run(self, files: Mapping[str, str], argv: Sequence[str], stdin: bytes, limits: Limits,
            slot: int = 0) -> RunResult:
        """Run once. ``slot`` (0 <= slot < workers) keeps concurrent runs apart (own user id when root)."""
        ...
