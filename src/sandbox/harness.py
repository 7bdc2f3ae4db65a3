"""Assert-style tests the candidate cannot reach: the test code runs in one interpreter, the candidate in another.

The paper does not say how its sandbox judges function-style tests; the usual harness (solution and tests in
one interpreter) lets a program patch ``compile``/``open`` or return an always-equal object, so here it cannot.

Shipped as a file into the sandbox and run with the sandbox's Python (stdlib only, ``-I -S``):

* ``python harness.py`` (the driver) reads ``{"token", "prefix", "test"}`` as JSON on stdin, makes itself
  non-dumpable (no ptrace, no ``/proc/<pid>/fd`` or ``mem`` for the candidate), runs the trusted prefix
  (e.g. HumanEval's prompt: imports, helpers), starts the server, and runs the test code with the candidate's
  functions bound to proxies. It prints ``<token> pass|wrong|error`` as its last line.
* ``python harness.py serve`` (the server, a child of the driver) runs ``solution.py`` and answers calls over
  its stdin/stdout pipe; the program's own stdin is /dev/null and its stdout goes to stderr.

Every value crossing the pipe is plain data (None, bool, int, float, complex, str, bytes, list, tuple, set,
frozenset, dict), rebuilt by the driver from JSON; anything else stays in the server behind a handle that can
be called and have attributes read, but never compared or tested for truth. So every ``==`` of a test runs
between builtin values in the driver, whatever the candidate returns. Where this departs from running the
tests beside the solution: arguments are copies (a test cannot see the candidate mutate them), and objects of
classes defined by the prefix or the test cannot be passed to the candidate.
"""
from __future__ import annotations

import ast
import builtins
import json
import os
import sys

MAX_MESSAGE_BYTES = 64 << 20
"""Longest message either side accepts (one JSON line); a longer one breaks the channel."""
BIG_INT_BITS = 12000
"""Ints longer than this travel as hex (decimal text of huge ints hits Python's 4300-digit limit)."""
SOLUTION = "solution.py"
NO_IMPORT = {"site", "sitecustomize", "usercustomize", "antigravity", "this", "__hello__", "__phello__"}
"""Modules the driver never imports for the candidate (they run code found on disk, or print)."""
VERDICTS = ("pass", "wrong", "error")


class ChannelBroken(Exception):
    """The server died or said something that is not the protocol: the run fails whatever the test does."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one (its type name and message)."""


# ------------------------------------------------------------------------------------------ plain data


def encode(value, handle_of=None, depth: int = 0):
    """Plain data -> JSON-ready tags; subclasses of builtin types become their base type (a Counter a dict).

    Anything else becomes ``{"ref": id}`` via ``handle_of`` (TypeError when None).
    """
    if depth > 200:
        raise ValueError("value nested more than 200 levels deep")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is float:
        return value
    if kind is int:
        return {"int": hex(value)} if value.bit_length() > BIG_INT_BITS else value
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    if kind in (bytes, bytearray):
        return {kind.__name__: value.hex()}
    if kind in (list, tuple, set, frozenset):
        return {kind.__name__: [encode(item, handle_of, depth + 1) for item in value]}
    if kind is dict:
        return {"dict": [[encode(k, handle_of, depth + 1), encode(v, handle_of, depth + 1)]
                         for k, v in value.items()]}
    base = _builtin_base(value)
    if base is not None:
        return encode(base, handle_of, depth)
    if handle_of is None:
        raise TypeError(f"cannot pass a {kind.__name__} across the sandbox; only builtin values")
    return {"ref": handle_of(value)}


def _builtin_base(value):
    """The builtin value of a subclass instance (IntEnum -> int, namedtuple -> tuple, numpy scalar -> item)."""
    for base, plain in _SCALARS:  # bool cannot be subclassed
        if isinstance(value, base):
            return plain(value)
    for base in (bytes, bytearray, tuple, list, frozenset, set, dict):
        if isinstance(value, base):
            return base(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    return None


def decode(value, remote_of=None):
    """JSON tags -> fresh builtin values (strict: anything unexpected raises ChannelBroken)."""
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is not dict or len(value) != 1:
        raise ChannelBroken(f"not a tagged value: {str(value)[:80]}")
    (tag, body), = value.items()
    try:
        if tag in _SEQUENCES and type(body) is list:
            return _SEQUENCES[tag](decode(item, remote_of) for item in body)
        if tag == "dict" and type(body) is list:
            return {decode(k, remote_of): decode(v, remote_of) for k, v in (_pair(p) for p in body)}
        if tag in ("bytes", "bytearray") and type(body) is str:
            return (bytes if tag == "bytes" else bytearray).fromhex(body)
        if tag == "int" and type(body) is str:
            return int(body, 16)
        if tag == "complex" and type(body) is list and len(body) == 2 and all(type(x) in (int, float) for x in body):
            return complex(*body)
        if tag == "ref" and type(body) is int and remote_of is not None:
            return remote_of(body)
    except (TypeError, ValueError) as err:  # e.g. a list inside a set
        raise ChannelBroken(f"bad {tag}: {err}") from None
    raise ChannelBroken(f"unknown tag {tag!r}")


_SCALARS = ((int, int.__int__), (float, float.__float__), (str, str.__str__),
            (complex, lambda v: complex(float(v.real), float(v.imag))))
_SEQUENCES = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


def _pair(item):
    if type(item) is not list or len(item) != 2:
        raise ChannelBroken("dict entries must be [key, value] pairs")
    return item


def _exception(name, message):
    """The candidate's exception as the driver raises it: the builtin class of that name (so a test can
    expect a ValueError), else CandidateError. Never StopIteration: raised from inside ``map`` it would end
    the iteration early, and ``all(map(f, cases))`` of nothing is True."""
    name, message = str(name), str(message)[:2000]
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, (StopIteration,
                                                                                    StopAsyncIteration)):
        try:
            return cls(message)
        except Exception:
            pass
    return CandidateError(f"{name}: {message}")


# ------------------------------------------------------------------------------------------ the driver


class Link:
    """The driver's end of the pipe to the server: one request, one reply, both one JSON line."""

    def __init__(self, proc) -> None:
        self.proc = proc
        self.broken: str | None = None
        self.remotes: dict[int, Remote] = {}

    def request(self, message: dict):
        if self.broken:
            raise ChannelBroken(self.broken)
        try:
            self.proc.stdin.write(json.dumps(message, allow_nan=True).encode() + b"\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline(MAX_MESSAGE_BYTES + 1)
            if not line.endswith(b"\n"):
                raise ChannelBroken("the candidate's process ended" if not line else "reply too long")
            reply = json.loads(line)
            if type(reply) is not dict or len(reply) != 1:
                raise ChannelBroken("malformed reply")
        except (OSError, ValueError, RecursionError, ChannelBroken) as err:
            self.broken = f"{type(err).__name__}: {err}"
            raise ChannelBroken(self.broken) from None
        (key, body), = reply.items()
        if key == "value":
            return self._decode(body)
        if key == "raise" and type(body) is list and len(body) == 2:
            raise _exception(*body)
        if key == "failed" and type(body) is list and len(body) == 2:
            self.broken = f"the program failed: {body[0]}: {str(body[1])[:500]}"
            raise ChannelBroken(self.broken)
        self.broken = f"unexpected reply {key!r}"
        raise ChannelBroken(self.broken)

    def _decode(self, body):
        try:
            return decode(body, self.remote)
        except (ChannelBroken, RecursionError) as err:
            self.broken = f"{type(err).__name__}: {err}"
            raise ChannelBroken(self.broken) from None

    def remote(self, ref) -> "Remote":
        if ref not in self.remotes:
            self.remotes[ref] = Remote(self, ref)
        return self.remotes[ref]

    def send(self, value):
        handle = lambda r: r._ref if isinstance(r, Remote) and r._link is self else _unsendable(r)  # noqa: E731
        return encode(value, handle)


def _unsendable(value):
    raise TypeError(f"cannot pass a {type(value).__name__} to the candidate; only builtin values")


class Remote:
    """A candidate's function, class or object, living in the server. Calls and attribute reads go there;
    comparisons and truth tests are refused (they would let the candidate pick the outcome)."""

    __slots__ = ("_link", "_ref")

    def __init__(self, link: Link, ref) -> None:
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_ref", ref)

    def __call__(self, *args, **kwargs):
        link = self._link
        return link.request({"op": "call", "ref": self._ref, "args": [link.send(a) for a in args],
                             "kwargs": [[str(k), link.send(v)] for k, v in kwargs.items()]})

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._link.request({"op": "getattr", "ref": self._ref, "name": name})

    def __setattr__(self, name: str, value) -> None:
        self._link.request({"op": "setattr", "ref": self._ref, "name": name, "value": self._link.send(value)})

    def __iter__(self):
        items = self._link.request({"op": "list", "ref": self._ref})
        if type(items) is not list:
            raise ChannelBroken("list() of a candidate object must give a list")
        return iter(items)

    def __len__(self) -> int:
        size = self._link.request({"op": "len", "ref": self._ref})
        if type(size) is not int or size < 0:
            raise ChannelBroken("len() of a candidate object must give an int >= 0")
        return size

    def __str__(self) -> str:
        text = self._link.request({"op": "str", "ref": self._ref})
        if type(text) is not str:
            raise ChannelBroken("str() of a candidate object must give a str")
        return text

    def __repr__(self) -> str:
        return f"<candidate object {self._ref!r}>"

    def _refuse(self, *_):
        raise TypeError(f"{self!r} cannot be compared or used as a truth value: the candidate must return "
                        f"builtin values (int, str, list, ...)")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __contains__ = _refuse
    __hash__ = object.__hash__

    def __copy__(self) -> "Remote":
        return self

    def __deepcopy__(self, memo) -> "Remote":
        return self


def free_names(code: str) -> set[str]:
    """Names the test code reads (a superset of what it needs from outside; its own definitions run after)."""
    return {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}


def trusted_scope(prefix: str) -> tuple[dict, set[str], set[str]]:
    """(scope, trusted, stubs): the prefix run in the driver (imports, helpers like HumanEval's ``poly``), the
    names it defines for real, and its stubs (a def with no code of its own, see _is_stub, or a class holding
    one): what the candidate completes, so they come from the candidate. A prefix that does not run on its
    own (a bare ``def f(x):`` header) gives nothing."""
    scope = {"__name__": "__main__", "__builtins__": builtins}
    if not prefix.strip():
        return scope, set(), set()
    try:
        tree = ast.parse(prefix)
        exec(compile(tree, "prefix.py", "exec"), scope)
    except Exception:
        return {"__name__": "__main__", "__builtins__": builtins}, set(), set()
    stubs = {node.name for node in tree.body if _is_stub_def(node)}
    for name in stubs:
        scope.pop(name, None)
    return scope, {name for name in scope if not name.startswith("__")}, stubs


def _is_stub_def(node) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return _is_stub(node.body)
    if isinstance(node, ast.ClassDef):
        return any(_is_stub_def(item) for item in node.body)
    return False


def _is_stub(body) -> bool:
    """Nothing but docstrings, pass, ..., imports (HumanEval/115 imports before its docstring) and
    ``raise NotImplementedError``."""
    for stmt in body:
        if isinstance(stmt, (ast.Pass, ast.Import, ast.ImportFrom)):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring or ``...``
        if isinstance(stmt, ast.Raise) and "NotImplementedError" in ast.dump(stmt):
            continue
        return False
    return True


def no_dumping() -> None:
    """prctl(PR_SET_DUMPABLE, 0): same-user processes cannot ptrace this one or open its /proc fds and memory."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    zero = ctypes.c_ulong(0)
    if libc.prctl(4, zero, zero, zero, zero) != 0 or libc.prctl(3, zero, zero, zero, zero) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")  # 4: SET, 3: GET


def bind_candidate(scope: dict, link: Link, wanted: list[str]) -> None:
    """Ask the server which of ``wanted`` the program defines and bind them: functions and classes as
    Remote, data as its value, modules by importing the same module here."""
    import importlib

    exports = link.request({"op": "hello", "names": wanted})
    if type(exports) is not dict:
        raise ChannelBroken("hello must answer a dict")
    for name, (kind, detail) in ((n, e) for n, e in exports.items() if n in wanted and _export_ok(e)):
        # kind "call": detail None; "data": the value; "module": the module's name
        if kind == "call":
            scope[name] = link.remote(name)
        elif kind == "data":
            scope[name] = detail
        elif kind == "module" and detail.split(".")[0] not in NO_IMPORT:
            try:
                scope[name] = importlib.import_module(detail)
            except Exception:
                pass


def _export_ok(entry) -> bool:
    if type(entry) is not tuple or len(entry) != 2:
        return False
    return (entry[0] == "call" and entry[1] is None) or entry[0] == "data" or (
        entry[0] == "module" and type(entry[1]) is str)


def drive() -> str:
    """The driver: everything the verdict depends on happens in this interpreter."""
    import subprocess

    request = json.loads(sys.stdin.buffer.read())
    os.close(0)  # the request (test code, token) is gone before the candidate starts
    test, prefix = request["test"], request.get("prefix", "")
    no_dumping()
    scope, trusted, stubs = trusted_scope(prefix)
    wanted = sorted(free_names(test) - trusted - (set(dir(builtins)) - stubs))
    proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.basename(__file__), "serve"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
    link = Link(proc)
    try:
        bind_candidate(scope, link, wanted)
        exec(compile(test, "tests.py", "exec"), scope)
        verdict = "error" if link.broken else "pass"
    except AssertionError:
        verdict = "error" if link.broken else "wrong"
        _report()
    except BaseException:  # noqa: BLE001 - the test's or the candidate's failure, reported, never fatal here
        verdict = "error"
        _report()
    finally:
        _stop(proc)
    if link.broken:
        sys.stderr.write(f"harness: candidate channel broken: {link.broken}\n")
    return f"{request['token']} {verdict}"


def _stop(proc) -> None:
    """End the server: EOF on its pipe, then SIGKILL where signals to other pids are allowed (not under
    rlimit's seccomp filter), and reap it; one that hangs on is left to the run's end."""
    import subprocess

    for step in (proc.stdin.close, proc.kill, lambda: proc.wait(timeout=1)):
        try:
            step()
        except (OSError, subprocess.TimeoutExpired):
            pass


def _report() -> None:
    import traceback

    traceback.print_exc(limit=8)


# ------------------------------------------------------------------------------------------ the server


def serve() -> None:
    """The server: runs solution.py, then answers requests until the driver closes the pipe. Nothing here is
    trusted; it only converts the candidate's values to plain data honestly."""
    import types

    chan_in = os.fdopen(os.dup(0), "rb")
    chan_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # the program's prints go to stderr, never into the channel
    os.close(null)
    sys.stdout = sys.stderr  # unbuffered enough to survive the kill at the end
    module = types.ModuleType("solution")
    module.__file__ = SOLUTION
    sys.modules["solution"] = module
    handles: dict[int, object] = {}

    def reply(message) -> None:
        chan_out.write(json.dumps(message).encode() + b"\n")
        chan_out.flush()

    def handle_of(obj) -> int:
        handles[len(handles) + 1] = obj
        return len(handles)

    hello = json.loads(chan_in.readline(MAX_MESSAGE_BYTES))
    try:
        with open(SOLUTION) as f:
            source = f.read()
        exec(compile(source, SOLUTION, "exec"), module.__dict__)
    except BaseException as err:  # noqa: BLE001
        _report()
        reply({"failed": [type(err).__name__, str(err)]})
        return
    scope = module.__dict__
    reply({"value": encode({n: _describe(scope[n]) for n in hello["names"] if n in scope})})
    for line in iter(lambda: chan_in.readline(MAX_MESSAGE_BYTES), b""):
        reply(_answer(json.loads(line), module.__dict__, handles, handle_of))


def _describe(value) -> tuple:
    if isinstance(value, type(sys)):
        return "module", str(value.__name__)
    if callable(value):
        return "call", None
    try:
        encode(value)
    except (TypeError, ValueError):
        return "call", None  # an object: reachable through a handle
    return "data", value


def _answer(req: dict, scope: dict, handles: dict, handle_of) -> dict:
    try:
        ref = req["ref"]
        target = handles[ref] if isinstance(ref, int) else scope[ref]
        op = req["op"]
        if op == "call":
            args = [decode(a, handles.__getitem__) for a in req["args"]]
            kwargs = {k: decode(v, handles.__getitem__) for k, v in req["kwargs"]}
            result = target(*args, **kwargs)
        elif op == "getattr":
            result = getattr(target, req["name"])
        elif op == "setattr":
            setattr(target, req["name"], decode(req["value"], handles.__getitem__))
            result = None
        elif op == "list":
            result = list(target)
        elif op == "len":
            result = len(target)
        else:  # str
            result = str(target)
        return {"value": encode(result, handle_of)}
    except BaseException as err:  # noqa: BLE001 - the candidate's exception goes back to the test
        return {"raise": [type(err).__name__, str(err)]}


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve()
        return 0
    try:
        line = drive()
    except BaseException:  # noqa: BLE001 - a broken request or prctl failure: no verdict line at all
        _report()
        return 2
    sys.stdout.flush()
    os.write(1, f"\n{line}\n".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
