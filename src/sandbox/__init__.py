"""Sandboxes for untrusted programs (the code reward): backends by name behind one interface.

``bwrap`` (bubblewrap namespaces) is the default; ``rlimit`` is a logged, weaker fallback (see rlimit.py).
"""
from __future__ import annotations

import logging

from kimi_rl.registry import Registry
from kimi_rl.sandbox.limits import Isolation, Limits, RunResult, Sandbox, SandboxUnavailable, WeakSandbox
from kimi_rl.sandbox.pool import parallel_map
from kimi_rl.sandbox.process import DEFAULT_UID_BASE

__all__ = ["SANDBOXES", "Isolation", "Limits", "RunResult", "Sandbox", "SandboxUnavailable", "WeakSandbox",
           "make_sandbox", "parallel_map"]

log = logging.getLogger(__name__)

SANDBOXES: Registry = Registry("sandbox")
"""Maps a backend name to its class ``(python=None, uid_base=...) -> Sandbox``."""
SANDBOXES.register_lazy("bwrap", "kimi_rl.sandbox.bwrap:BwrapSandbox")
SANDBOXES.register_lazy("rlimit", "kimi_rl.sandbox.rlimit:RlimitSandbox")


def make_sandbox(backend: str = "auto", python: str | None = None,
                 uid_base: int = DEFAULT_UID_BASE, allow_weak: bool = True) -> Sandbox:
    """Build and probe a backend. ``auto``: bwrap where it works, else rlimit with a warning.

    ``allow_weak=False`` refuses a sandbox that does not contain programs (``Isolation.contained``):
    WeakSandbox instead of the rlimit fallback, or of an explicitly named weak backend.
    Raises SandboxUnavailable when the named backend cannot run here (the message says why).
    """
    if backend != "auto":
        sandbox = SANDBOXES.get(backend)(python=python, uid_base=uid_base)
        if not sandbox.isolation.contained and not allow_weak:
            raise WeakSandbox(f"backend={backend} does not contain programs ({sandbox.isolation.summary()})")
        _log(sandbox)
        return sandbox
    try:
        sandbox = SANDBOXES.get("bwrap")(python=python, uid_base=uid_base)
    except SandboxUnavailable as err:
        if not allow_weak:
            raise WeakSandbox(f"backend=auto: bwrap cannot run here ({err}), and the fallback, rlimit, does not "
                              f"contain programs") from None
        sandbox = SANDBOXES.get("rlimit")(python=python, uid_base=uid_base)
        log.warning("sandbox: bwrap unavailable (%s); FALLING BACK to rlimit: %s. "
                    "Install bubblewrap (apt-get install -y bubblewrap) for full isolation.",
                    err, sandbox.isolation.summary())
        return sandbox
    _log(sandbox)
    return sandbox


def _log(sandbox: Sandbox) -> None:
    iso = sandbox.isolation
    if not iso.contained:
        log.warning("sandbox %s does NOT contain programs: %s", sandbox.name, iso.summary())
    elif iso.gaps:
        log.warning("sandbox %s: %s", sandbox.name, iso.summary())
    else:
        log.info("sandbox %s: %s", sandbox.name, iso.summary())
