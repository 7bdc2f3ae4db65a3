"""A memory cgroup per sandbox slot, where the kernel lets this process make one (root, or a delegated cgroup).

It bounds everything a run holds in RAM together (every process, tmpfs files, memfd, SysV shared memory), which
per-process rlimits cannot, and it names every process of the run so that none outlives it.
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

_JOIN = 'echo $$ > "$0" && exec "$@"'
"""sh script: move this shell into the cgroup (file $0), then exec the rest; every later process inherits it."""


class MemoryCgroups:
    """Per-slot child cgroups ``kimi-sbx-<pid>-<tag>-<slot>`` of this process's own memory cgroup (v2 or v1)."""

    def __init__(self, base: Path, version: int) -> None:
        self.base, self.version = base, version
        self._tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self._made: dict[int, Path] = {}

    @classmethod
    def find(cls) -> "MemoryCgroups | None":
        """This process's memory cgroup if a child can be made in it and given a limit, else None."""
        base, version = _own_memory_cgroup()
        if base is None:
            return None
        groups = cls(base, version)
        try:
            groups.prepare(0, 64 << 20)
        except OSError as err:
            log.debug("no memory cgroup for the sandbox under %s: %s", base, err)
            groups.close()
            return None
        return groups

    def path(self, slot: int) -> Path:
        return self.base / f"kimi-sbx-{self._tag}-{slot}"

    def prepare(self, slot: int, limit_bytes: int) -> list[str]:
        """Create (once) the slot's cgroup, set its limit (no swap), and return the argv prefix that joins it.

        A limit below what the cgroup still holds (page cache of earlier runs) can be refused: then the
        cgroup is made afresh."""
        path = self.path(slot)
        if slot not in self._made:
            path.mkdir(exist_ok=True)
            self._made[slot] = path
        try:
            self._set_limit(path, limit_bytes)
        except OSError:
            self.kill(slot)
            path.rmdir()
            path.mkdir()
            self._set_limit(path, limit_bytes)
        return ["/bin/sh", "-c", _JOIN, str(path / "cgroup.procs")]

    def _set_limit(self, path: Path, limit_bytes: int) -> None:
        if self.version == 2:
            (path / "memory.max").write_text(str(limit_bytes))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
            return
        memsw = path / "memory.memsw.limit_in_bytes"
        if memsw.exists() and int(memsw.read_text()) < limit_bytes:  # memsw >= limit at every step
            memsw.write_text(str(limit_bytes))
        (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        if memsw.exists():
            memsw.write_text(str(limit_bytes))
        swappiness = path / "memory.swappiness"  # v1 without swap accounting: 0 keeps the run's pages out of swap
        if swappiness.exists():
            try:
                swappiness.write_text("0")
            except OSError:
                pass

    def kill(self, slot: int, timeout_s: float = 2.0) -> int:
        """SIGKILL every process left in the slot's cgroup until it is empty; returns how many were found."""
        path = self.path(slot)
        found: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
            except OSError:
                return len(found)
            if not pids or time.monotonic() > deadline:
                return len(found)
            found.update(pids)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def close(self) -> None:
        """Remove the slot cgroups (each emptied first)."""
        for slot, path in list(self._made.items()):
            self.kill(slot)
            try:
                path.rmdir()
            except OSError:
                pass
            del self._made[slot]


def _own_memory_cgroup() -> tuple[Path | None, int]:
    """(directory of this process's memory cgroup, cgroup version), or (None, 0) when it is not writable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None, 0
    for line in lines:
        _, controllers, cgpath = line.split(":", 2)
        version = 2 if controllers == "" else 1
        if version == 1 and "memory" not in controllers.split(","):
            continue
        for mount in mounts:
            fields = mount.split()
            fstype = fields[fields.index("-") + 1]
            options = fields[-1].split(",")
            if (version == 2 and fstype == "cgroup2") or (version == 1 and fstype == "cgroup" and "memory" in options):
                root, point = fields[3], fields[4]
                if not cgpath.startswith(root):
                    continue
                base = Path(point + "/" + cgpath[len(root):].lstrip("/"))
                if version == 2 and "memory" not in _read(base / "cgroup.subtree_control").split():
                    continue  # children would get no memory controller (v2 needs it delegated)
                if os.access(base, os.W_OK):
                    return base, version
    return None, 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
