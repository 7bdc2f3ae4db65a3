"""The checks every config section runs in ``__post_init__``: one-line ``ConfigError``s naming the key."""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import PurePosixPath


class ConfigError(ValueError):
    """A config problem, reported with the key (and file) that caused it."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _one_of(value: str, key: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"'{value}' is not one of {', '.join(choices)}")


def _finite(section: object, prefix: str) -> None:
    """Every float of ``section`` is a finite number: inf and nan are no valid setting of any key."""
    for f in fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}.{f.name}: must be a finite number, got {value}")


def _at_least(section: object, prefix: str, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        _check(value >= minimum, f"{prefix}.{name}", f"must be >= {minimum}, got {value}")


RESERVED_RUN_NAMES = ("cache",)
"""First parts of ``run.name`` taken by shared folders under ``run.dir`` (``<dir>/cache``: cached models)."""


def check_run_name(name: str) -> None:
    """``run.name`` must name a folder inside ``run.dir``: relative, no ``..`` or empty parts, no backslash
    (``a/b`` is allowed: long2short writes ``<name>/long2short/<method>``)."""
    parts = name.split("/")
    ok = bool(name.strip()) and "\\" not in name and "\0" not in name and not PurePosixPath(name).is_absolute() \
        and all(p not in ("", ".", "..") and p.strip() == p for p in parts)
    _check(ok, "run.name", f"'{name}' must be a folder name inside run.dir (no '..', no leading '/', "
                           f"no empty parts or surrounding spaces), e.g. run.name=my_run")
    _check(parts[0] not in RESERVED_RUN_NAMES, "run.name",
           f"'{name}' is taken by the shared folder <run.dir>/{parts[0]}; choose another name")
