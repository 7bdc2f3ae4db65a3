"""What a sandboxed run may use (Limits), what it returned (RunResult), what a backend isolates.

k1.5 (section 2.6.4) runs code in its own container service; here a backend confines one process tree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Protocol, Sequence


class SandboxUnavailable(RuntimeError):
    """A backend cannot run on this machine (missing binary, namespaces refused, ...)."""


class WeakSandbox(SandboxUnavailable, ValueError):
    """Only a sandbox that does not contain programs could be had, and the caller refused one (``allow_weak``)."""


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
    """Size of each writable filesystem (size-limited tmpfs: the working directory, /tmp, /dev/shm, and for
    rlimit as root /var/tmp) where the backend provides them."""
    group_memory_mb: int | None = None
    """RAM of the whole run together (a memory cgroup, where the kernel lets us make one): every process,
    tmpfs files, memfd and shared memory. None: 2 x memory_mb + 4 x disk_mb."""

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "processes", "file_size_mb", "open_files",
                     "output_bytes", "disk_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit '{name}' must be positive, got {getattr(self, name)!r}")
        if self.group_memory_mb is not None and not self.group_memory_mb > 0:
            raise ValueError(f"sandbox limit 'group_memory_mb' must be positive or null, got {self.group_memory_mb!r}")

    @property
    def group_memory_bytes(self) -> int:
        mb = self.group_memory_mb or 2 * self.memory_mb + 4 * self.disk_mb
        return mb << 20

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
    """Host processes can be neither signalled nor inspected (/proc/<pid>/environ, their command lines)."""
    separate_user: bool
    """Runs as a user other than the caller, so the caller's private files are out of reach."""
    user: str
    """Who the program runs as."""
    gaps: tuple[str, ...] = ()
    """What a program can still do here, in words (logged as a warning when not empty)."""
    scratch: tuple[str, ...] = ()
    """The only writable paths (besides the working directory), each a tmpfs of ``Limits.disk_mb``; empty:
    writes go to host filesystems."""
    memory_cgroup: bool = False
    """The run's RAM as a whole is bounded (``Limits.group_memory_mb``)."""

    @property
    def contained(self) -> bool:
        """Network, filesystem and processes all isolated: fit for rewards a policy is trained on."""
        return self.network and self.filesystem and self.processes

    def summary(self) -> str:
        flags = [f"network {'isolated' if self.network else 'OPEN'}",
                 f"filesystem {'isolated' if self.filesystem else 'host-visible, user-writable paths writable'}",
                 f"processes {'isolated' if self.processes else 'host processes visible'}",
                 f"runs as {self.user}"]
        if self.gaps:
            flags.append("NOT isolated: " + "; ".join(self.gaps))
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
