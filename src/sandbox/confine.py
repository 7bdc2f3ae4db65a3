"""The rlimit backend's last step before the program: mounts, user, rlimits, a seccomp filter, then exec.

The paper's containers isolate fully; this only narrows what a program can do where bwrap cannot run.
Run as ``python -I -S -c <this file> <config_args(config)> -- <argv>`` (stdlib only; no json, whose import
alone costs this step a third of its start-up). Config keys:

* ``mounts`` (root in a fresh mount namespace): ``{"size": bytes, "inodes": n}``: every mount read-only,
  then size-limited tmpfs on /tmp, /var/tmp and /dev/shm; the files of the current directory are copied to
  /tmp/box, which becomes the working directory;
* ``uid``: switch to this uid/gid with no supplementary groups (root callers);
* ``rlimits``: ``{"AS": n, "CPU": [soft, hard], ...}`` (``resource.RLIMIT_<name>``);
* ``seccomp``: install ``deny_filter`` (needs x86_64 or aarch64 and a kernel with seccomp filters).

A failure prints ``confine: <step>: <error>`` and exits with CONFINE_FAILED; the program never runs unconfined.
"""
from __future__ import annotations

import errno
import os
import struct
import sys

CONFINE_FAILED = 125

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
DENIED = {  # name: (x86_64 number, aarch64 number)
    "setsid": (112, 157), "setpgid": (109, 154),  # stay in the run's process group: the group kill reaches all
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
}
"""Syscalls that fail with EPERM: leaving the process group, reaching into or signalling other processes,
and io_uring (which could open sockets past this filter)."""
ONLY_WHEN_ARG0 = {"socket": ((41, 198), 1), "kill": ((62, 129), 0)}
"""Allowed only with this first argument: sockets of family AF_UNIX (no IP, not even loopback), signals
to the caller's own process group (pid 0)."""
CLONE_NEWUSER = 0x10000000
NO_FLAG_IN_ARG0 = {"unshare": ((272, 97), CLONE_NEWUSER), "clone": ((56, 220), CLONE_NEWUSER)}
"""Denied when the first argument (the flags) has this bit: no user namespace of its own, where the
program would hold the capabilities to mount an unbounded tmpfs."""
NOT_IMPLEMENTED = {"clone3": (435, 435)}
"""ENOSYS: its flags sit in memory a filter cannot read; glibc falls back to clone."""
_X32_BIT = 0x40000000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _DENY, _ENOSYS = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS


def deny_filter(machine: str) -> list[tuple[int, int, int, int]]:
    """The classic-BPF program as (code, jt, jf, k) rows; other architectures' syscalls are denied too."""
    col = {"x86_64": 0, "aarch64": 1}[machine]
    rows: list[list] = [[_LD_W_ABS, 0, 0, 4], [_JEQ, 0, "deny", AUDIT_ARCH[machine]], [_LD_W_ABS, 0, 0, 0]]
    if machine == "x86_64":
        rows.append([_JGE, "deny", 0, _X32_BIT])
    rows += [[_JEQ, "deny", 0, numbers[col]] for numbers in DENIED.values()]
    rows += [[_JEQ, "enosys", 0, numbers[col]] for numbers in NOT_IMPLEMENTED.values()]
    checks = [(numbers, _JEQ, value, "allow", "deny") for numbers, value in ONLY_WHEN_ARG0.values()]
    checks += [(numbers, _JSET, bit, "deny", "allow") for numbers, bit in NO_FLAG_IN_ARG0.values()]
    rows += [[_JEQ, f"arg0-{i}", 0, check[0][col]] for i, check in enumerate(checks)]
    rows.append([_RET, 0, 0, _ALLOW])
    labels = {}
    for i, (_, op, k, if_true, if_false) in enumerate(checks):
        labels[f"arg0-{i}"] = len(rows)
        rows += [[_LD_W_ABS, 0, 0, 16], [op, if_true, if_false, k]]  # args[0], low 32 bits
    for label, action in (("allow", _ALLOW), ("deny", _DENY), ("enosys", _ENOSYS)):
        labels[label] = len(rows)
        rows.append([_RET, 0, 0, action])
    for i, row in enumerate(rows):  # jump targets are offsets from the next row
        row[1], row[2] = (labels[j] - i - 1 if isinstance(j, str) else j for j in row[1:3])
    return [tuple(row) for row in rows]


def _prctl(libc, *args) -> None:
    import ctypes

    if libc.prctl(*(a if isinstance(a, ctypes._SimpleCData) else ctypes.c_ulong(a) for a in args)) != 0:
        raise OSError(ctypes.get_errno(), f"prctl{args[:2]}")


def install_seccomp() -> None:
    import ctypes

    machine = os.uname().machine
    if machine not in AUDIT_ARCH:
        raise OSError(errno.ENOSYS, f"no syscall table for {machine}")
    rows = deny_filter(machine)
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *row) for row in rows))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(rows), ctypes.addressof(program))
    libc = ctypes.CDLL(None, use_errno=True)
    _prctl(libc, 38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    _prctl(libc, 22, 2, ctypes.c_void_p(ctypes.addressof(fprog)), 0, 0)  # PR_SET_SECCOMP, MODE_FILTER


_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND = 1, 2, 4, 8, 32, 4096
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME, _MS_REC, _MS_PRIVATE = 1024, 2048, 1 << 21, 16384, 1 << 18
_KEEP = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC, "noatime": _MS_NOATIME,
         "nodiratime": _MS_NODIRATIME, "relatime": _MS_RELATIME}
TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
WORKDIR = "/tmp/box"


def _mount(libc, source, target, fstype, flags, data) -> None:
    import ctypes

    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}")


def setup_mounts(size: int, inodes: int, uid: int | None) -> None:
    """Every existing mount read-only (this namespace only), bounded tmpfs where programs may write, and
    the current directory's files copied into WORKDIR, owned by ``uid``."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    files = {}
    for name in os.listdir("."):
        with open(name, "rb") as f:
            files[name] = f.read()
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE, None)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        target = fields[4].encode().decode("unicode_escape")
        if target == "/proc" or target.startswith("/proc/"):
            continue
        flags = sum(bit for opt, bit in _KEEP.items() if opt in fields[5].split(","))
        try:
            _mount(libc, None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags, None)
        except OSError:
            pass  # e.g. a mount hidden under another one; /proc/self/mountinfo is re-checked by the probe
    for path in TMPFS_DIRS:
        if os.path.isdir(path):
            _mount(libc, "kimi-sbx", path, "tmpfs", _MS_NOSUID | _MS_NODEV,
                   f"size={size},nr_inodes={inodes},mode=1777")
    os.mkdir(WORKDIR, 0o755)
    for name, data in files.items():
        with open(os.path.join(WORKDIR, name), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(WORKDIR, name), 0o644)
    if uid is not None:
        os.chown(WORKDIR, uid, uid)
    os.chdir(WORKDIR)


def confine(config: dict) -> None:
    import resource

    step = "mounts"
    try:
        if config.get("mounts"):
            setup_mounts(config["mounts"]["size"], config["mounts"]["inodes"], config.get("uid"))
        step = "uid"
        if config.get("uid") is not None:
            os.setgroups([])
            os.setresgid(config["uid"], config["uid"], config["uid"])
            os.setresuid(config["uid"], config["uid"], config["uid"])
        step = "rlimits"
        for name, value in config.get("rlimits", {}).items():
            which = getattr(resource, f"RLIMIT_{name}")
            soft, hard = value if isinstance(value, list) else (value, value)
            cap = resource.getrlimit(which)[1]  # an unprivileged caller cannot raise its hard limit
            if cap != resource.RLIM_INFINITY:
                soft, hard = min(soft, cap), min(hard, cap)
            resource.setrlimit(which, (soft, hard))
        step = "seccomp"
        if config.get("seccomp"):
            install_seccomp()
    except Exception as err:  # noqa: BLE001 - any failure stops here, before the program
        sys.stderr.write(f"confine: {step}: {err}\n")
        sys.stderr.flush()
        os._exit(CONFINE_FAILED)


def config_args(config: dict) -> list[str]:
    """The config as ``key=value`` arguments (the inverse of parse_config)."""
    out = [f"seccomp={int(bool(config.get('seccomp')))}"]
    if config.get("uid") is not None:
        out.append(f"uid={config['uid']}")
    if config.get("mounts"):
        out.append(f"mounts={config['mounts']['size']},{config['mounts']['inodes']}")
    for name, value in config.get("rlimits", {}).items():
        soft, hard = value if isinstance(value, (list, tuple)) else (value, value)
        out.append(f"rlimit={name},{soft},{hard}")
    return out


def parse_config(args: list[str]) -> dict:
    config: dict = {"rlimits": {}}
    for arg in args:
        key, value = arg.split("=", 1)
        if key == "seccomp":
            config["seccomp"] = value == "1"
        elif key == "uid":
            config["uid"] = int(value)
        elif key == "mounts":
            size, inodes = value.split(",")
            config["mounts"] = {"size": int(size), "inodes": int(inodes)}
        elif key == "rlimit":
            name, soft, hard = value.split(",")
            config["rlimits"][name] = [int(soft), int(hard)]
        else:
            raise ValueError(f"unknown confine option {arg!r}")
    return config


def main(argv: list[str]) -> None:
    split = argv.index("--")
    config, rest = parse_config(argv[:split]), argv[split + 1:]
    confine(config)
    try:
        os.execv(rest[0], rest)
    except OSError as err:
        sys.stderr.write(f"confine: exec {rest[0]}: {err}\n")
        os._exit(CONFINE_FAILED)


if __name__ == "__main__":
    main(sys.argv[1:])
