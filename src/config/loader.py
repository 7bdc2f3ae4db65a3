"""Compose conf/*.yaml and ``key=value`` overrides into one validated ``Config``.

A small subset of Hydra: ``conf/config.yaml`` lists default group choices; ``group=name``
picks ``conf/<group>/<name>.yaml`` (a partial config at the root); ``a.b=value`` sets a key. A chosen file may
list ``defaults`` of its own (other groups' choices, e.g. conf/experiment/smollm2_gym.yaml picks model and data);
a choice on the command line wins over them, and the file's keys win over the files it picks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

import kimi_rl
from kimi_rl.config import Config, ConfigError


def default_conf_dir() -> Path:
    """conf/ beside the package sources, or $KIMI_RL_CONF."""
    env = os.environ.get("KIMI_RL_CONF")
    if env:
        return Path(env)
    return Path(kimi_rl.__file__).resolve().parent.parent / "conf"  # src/__init__.py -> the repository's conf/


def _groups(conf_dir: Path) -> dict[str, list[str]]:
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(conf_dir.iterdir())
        if d.is_dir()
    }


def _read_yaml(path: Path) -> DictConfig:
    try:
        data = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError has the line number in its text
        raise ConfigError(f"{path}: cannot parse YAML: {e}") from e
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _valid_keys(node: Any, prefix: str) -> str:
    if isinstance(node, DictConfig):
        keys = [f"{prefix}.{k}" if prefix else str(k) for k in node.keys()]
        return ", ".join(keys)
    return "(no sub-keys)"


def _merge(base: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(base, parent) if parent else base
        raise ConfigError(
            f"{source}: unknown key '{key}'; valid keys here: {_valid_keys(node, parent)}"
        ) from None
    except ValidationError as e:
        key = getattr(e, "full_key", "?")
        msg = str(e.msg).splitlines()[0]
        raise ConfigError(f"{source}: bad value for '{key}': {msg}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {e}") from None


def parse_overrides(overrides: list[str], groups: dict[str, list[str]]) -> tuple[dict[str, str], list[str]]:
    """Split CLI words into group choices (``model=smollm2``) and key settings (``a.b=1``)."""
    choices: dict[str, str] = {}
    keys: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        if key in groups:
            if value not in groups[key]:
                raise ConfigError(
                    f"{key}={value}: no conf/{key}/{value}.yaml; choices: {', '.join(groups[key])}"
                )
            choices[key] = value
        else:
            keys.append(item)
    return choices, keys


def compose(overrides: list[str] | None = None, conf_dir: Path | None = None) -> DictConfig:
    """Merge config.yaml's body, the chosen group files (each file's own section, then the keys it sets in
    other sections) and key overrides, in that order: later wins."""
    conf_dir = conf_dir or default_conf_dir()
    if not (conf_dir / "config.yaml").is_file():
        raise ConfigError(f"{conf_dir}/config.yaml not found (set KIMI_RL_CONF to the conf folder)")
    groups = _groups(conf_dir)
    choices, key_overrides = parse_overrides(list(overrides or []), groups)

    root = _read_yaml(conf_dir / "config.yaml")
    defaults = root.pop("defaults", []) or []
    selected: dict[str, str] = {}
    for entry in defaults:
        for group, name in dict(entry).items():
            selected[str(group)] = str(name)
    selected.update(choices)
    bodies = {group: _read_yaml(conf_dir / group / f"{name}.yaml") for group, name in choices.items()}
    for group, body in bodies.items():  # a chosen preset's own defaults (e.g. experiment=...), below the CLI's
        path = conf_dir / group / f"{choices[group]}.yaml"
        for entry in body.pop("defaults", None) or []:
            for sub, name in dict(entry).items():
                sub, name = str(sub), str(name)
                if sub not in groups or name not in groups[sub] or sub == group:
                    raise ConfigError(f"{path}: defaults: {sub}: {name} is no conf/{sub}/{name}.yaml of another group")
                if sub not in choices:
                    selected[sub] = name

    cfg: DictConfig = OmegaConf.structured(Config)
    cfg = _merge(cfg, root, str(conf_dir / "config.yaml"))
    files: list[tuple[str, Path, dict]] = []
    for group, name in selected.items():
        path = conf_dir / group / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"{conf_dir}/config.yaml: default {group}: {name} but {path} is missing")
        files.append((group, path, bodies[group] if group in bodies else _read_yaml(path)))
    # A group file's own section first, then what it sets in other sections, so that e.g. model=smollm2's
    # rollout keys win over conf/rollout/vllm.yaml whatever the order of the defaults list.
    for group, path, body in files:
        own = {k: v for k, v in body.items() if k == group}
        if own:
            cfg = _merge(cfg, own, str(path))
    for group, path, body in files:
        foreign = {k: v for k, v in body.items() if k != group}
        if foreign:
            cfg = _merge(cfg, foreign, str(path))
    for item in key_overrides:
        try:
            dot = OmegaConf.from_dotlist([item])
        except Exception as e:
            raise ConfigError(f"override '{item}': {e}") from None
        cfg = _merge(cfg, dot, f"override '{item}'")
    return cfg


def load_config(overrides: list[str] | None = None, conf_dir: Path | None = None) -> Config:
    """The validated, typed config (dataclass checks run on the merged values)."""
    cfg = compose(overrides, conf_dir)
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        if isinstance(e.__cause__, ConfigError):
            raise e.__cause__ from None
        raise ConfigError(str(e)) from None


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg))
