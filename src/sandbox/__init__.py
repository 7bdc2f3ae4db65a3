"""Sandboxes for untrusted programs (the code reward): backends by name behind one interface.

``bwrap`` (bubblewrap namespaces) is the default; ``rlimit`` is a logged, weaker fallback (see rlimit.py).
"""
from __future__ import annotations

import logging

from kimi_rl.registry import Registry
from kimi_rl.sandbox.limits import Isolation, Limits, RunResult, Sandbox, SandboxUnavailable
from kimi_rl.sandbox.pool import parallel_map
from kimi_rl.sandbox.process import DEFAULT_UID_BASE

__all__ = ["SANDBOXES", "Isolation", "Limits", "RunResult", "Sandbox", "SandboxUnavailable",
           "make_sandbox", "parallel_map"]

log = logging.getLogger(__name__)

SANDBOXES: Registry = Registry("sandbox")
"""Maps a backend name to its class ``(python=None, uid_base=...) -> Sandbox``."""
SANDBOXES.register_lazy("bwrap", "kimi_rl.sandbox.bwrap:BwrapSandbox")
SANDBOXES.register_lazy("rlimit", "kimi_rl.sandbox.rlimit:RlimitSandbox")


def make_sandbox(backend: str = "auto", python: str | None = None,
                 uid_base: int = DEFAULT_UID_BASE) -> Sandbox:
    """Build and probe a backend. ``auto``: bwrap where it works, else rlimit with a warning.

    Raises SandboxUnavailable when the named backend cannot run here (the message says why).
    """
    if backend != "auto":
        sandbox = SANDBOXES.get(backend)(python=python, uid_base=uid_base)
        log.info("sandbox %s: %s", sandbox.name, sandbox.isolation.summary())
        return sandbox
    try:
        sandbox = SANDBOXES.get("bwrap")(python=python, uid_base=uid_base)
    except SandboxUnavailable as err:
        sandbox = SANDBOXES.get("rlimit")(python=python, uid_base=uid_base)
        log.warning("sandbox: bwrap unavailable (%s); FALLING BACK to rlimit: %s. "
                    "Install bubblewrap (apt-get install -y bubblewrap) for full isolation.",
                    err, sandbox.isolation.summary())
        return sandbox
    log.info("sandbox bwrap: %s", sandbox.isolation.summary())
    return sandbox
