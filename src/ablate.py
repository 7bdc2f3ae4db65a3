"""``kimi-rl ablate NAME``: one of the paper's claims, its arms run with the same seed and warm-up, side by side.

The ablations are defined in ``conf/ablations.yaml`` (the only list): each names the claim, its arms (config
overrides) and the TensorBoard curves to plot. Every arm is a ``kimi-rl train`` run under
``runs/ablations/<NAME>/<arm>/`` (the warm-up comes from the shared SFT cache, so all arms start from the
same model); the ablation then writes ``table.md``, ``table.json`` and ``curves.png`` beside them.
"""
from __future__ import annotations

import dataclasses
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from kimi_rl.config import Config, ConfigError
from kimi_rl.config.loader import default_conf_dir, load_config
from kimi_rl.runs import RunPaths, config_hash, is_rank_zero, log, read_scalars, set_log_file

ABLATIONS_FILE = "ablations.yaml"
RESULT_FILE = "ablation_arm.json"
"""Per arm: ``arm_key`` (its config but run.name), held-out results and timing; an arm whose key matches a
finished one (its own folder's, or another ablation's identical arm) is not rerun."""
TIME_TAGS = ("time/rollout_s", "time/score_s", "time/train_s", "time/sync_s")
"""The stages of one iteration; their sum stands for its time in runs that predate ``time/iteration_s``."""


@dataclass(frozen=True)
class Ablation:
    name: str
    claim: str
    """The paper's claim the arms test, with its section or figure."""
    arms: dict[str, list[str]]
    """Arm name -> its config overrides, in the file's order (the first arm is the reference)."""
    common: list[str] = field(default_factory=list)
    """Overrides of every arm of this ablation (after the file's ``settings``)."""
    curves: list[str] = field(default_factory=list)
    """TensorBoard tags plotted per arm against the iteration."""


def _words(node: Any, where: str) -> list[str]:
    if node is None:
        return []
    if not isinstance(node, ListConfig) or not all(isinstance(w, str) for w in node):
        raise ConfigError(f"{where}: expected a list of 'key=value' strings")
    return [str(w) for w in node]


def load_ablations(conf_dir: Optional[Path] = None) -> tuple[list[str], dict[str, Ablation]]:
    """``(settings, ablations by name)`` of ``conf/ablations.yaml``; errors name the file and the key."""
    path = (conf_dir or default_conf_dir()) / ABLATIONS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found (set KIMI_RL_CONF to the conf folder)")
    try:
        raw = OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: cannot parse YAML: {e}") from e
    if not isinstance(raw, DictConfig) or set(raw.keys()) - {"settings", "ablations"}:
        raise ConfigError(f"{path}: expected the top-level keys 'settings' and 'ablations'")
    settings = _words(raw.get("settings"), f"{path}: settings")
    out: dict[str, Ablation] = {}
    for name, body in (raw.get("ablations") or {}).items():
        where = f"{path}: ablations.{name}"
        if not isinstance(body, DictConfig):
            raise ConfigError(f"{where}: expected a mapping with claim, arms, common, curves")
        unknown = set(body.keys()) - {"claim", "arms", "common", "curves"}
        if unknown:
            raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}'; valid keys: claim, arms, common, curves")
        arms = body.get("arms")
        if not isinstance(arms, DictConfig) or not arms:
            raise ConfigError(f"{where}.arms: expected a mapping of arm name -> list of overrides")
        bad = next((a for a in arms.keys() if not (isinstance(a, str) and a.isidentifier())), None)
        if bad is not None:
            raise ConfigError(f"{where}.arms: arm name {bad!r} must be a plain name (letters, digits, _; "
                              "YAML reads on/off/yes/no as booleans)")
        out[str(name)] = Ablation(
            name=str(name), claim=str(body.get("claim") or ""),
            arms={str(a): _words(w, f"{where}.arms.{a}") for a, w in arms.items()},
            common=_words(body.get("common"), f"{where}.common"),
            curves=_words(body.get("curves"), f"{where}.curves"))
    return settings, out


def arm_configs(ablation: Ablation, settings: list[str], overrides: list[str],
                conf_dir: Optional[Path] = None) -> dict[str, Config]:
    """Every arm's validated config, all composed before any arm runs (a bad override fails at once)."""
    out = {}
    for arm, words in ablation.arms.items():
        cfg = load_config(settings + ablation.common + words + list(overrides), conf_dir)
        out[arm] = dataclasses.replace(cfg, run=dataclasses.replace(
            cfg.run, name=arm_run_name(cfg, ablation.name, arm)))
    first = next(iter(out.values()))
    for arm, cfg in out.items():
        if cfg.trainer.devices * cfg.trainer.num_nodes != 1:
            raise ConfigError(f"trainer.devices: ablations run their arms in one process, one after another; "
                              f"use one device (arm '{arm}' has {cfg.trainer.devices} x {cfg.trainer.num_nodes})")
        if cfg.run.seed != first.run.seed or cfg.run.dir != first.run.dir:
            raise ConfigError(f"ablation '{ablation.name}': arm '{arm}' changes run.seed or run.dir; every arm "
                              "must share the seed and the warm-up")
    return out


def arm_run_name(cfg: Config, ablation: str, arm: str) -> str:
    """``ablations/<ablation>/<arm>``, under the command line's ``run.name`` when it is not the default."""
    base = "ablations" if cfg.run.name == Config().run.name else f"{cfg.run.name}/ablations"
    return f"{base}/{ablation}/{arm}"


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def arm_row(arm: str, result: dict, scalars: dict[str, dict[int, float]], curves: list[str]) -> dict:
    """One table row: held-out before/after (pass@1, per level, pass@k, tokens), time per iteration, curves' means."""
    before, after = result["eval"].get("before", {}), result["eval"].get("after", {})
    if "time/iteration_s" in scalars:  # the iteration's wall time, batch start to end
        iteration_s = list(scalars["time/iteration_s"].values())
    else:
        steps = sorted(set().union(*(scalars.get(t, {}).keys() for t in TIME_TAGS)))
        iteration_s = [sum(scalars.get(t, {}).get(s, 0.0) for t in TIME_TAGS) for s in steps]
    tokens = list(scalars.get("rollout/new_tokens", {}).values())
    k = str(after.get("samples", "")) if after else ""
    row = {
        "arm": arm,
        "folder": result.get("folder"),
        "iterations": result["iterations"],
        "rl_seconds": result["seconds"],
        "before": before.get("accuracy"),
        "after": after.get("accuracy"),
        "gain": (after["accuracy"] - before["accuracy"]) if before and after else None,
        "after_per_level": {lv: s["accuracy"] for lv, s in after.get("per_level", {}).items()},
        "before_per_level": {lv: s["accuracy"] for lv, s in before.get("per_level", {}).items()},
        "pass_at_k_before": before.get("pass_at_k", {}).get(k),
        "pass_at_k_after": after.get("pass_at_k", {}).get(k),
        "k": int(k) if k else None,
        "tokens_before": before.get("mean_tokens"),
        "tokens_after": after.get("mean_tokens"),
        "iteration_s": _mean(iteration_s),
        "sampled_tokens_per_iteration": _mean(tokens),
        "s_per_1k_sampled_tokens": (sum(iteration_s) / sum(tokens) * 1000) if tokens and sum(tokens) else None,
        "gain_per_minute": gain_per_minute(before, after, iteration_s),
        "curve_means": {tag: _mean(list(scalars.get(tag, {}).values())) for tag in curves},
    }
    return row


def gain_per_minute(before: dict, after: dict, iteration_s: list[float]) -> Optional[float]:
    """Held-out pass@1 points gained per minute of RL iterations: 100 (after - before) / (sum of the iterations'
    wall times / 60). Arms that iterate at different speeds compare at equal wall-clock by this figure
    (evaluations excluded, so it does not depend on how often an arm is evaluated)."""
    if not (before and after) or not iteration_s or sum(iteration_s) <= 0:
        return None
    return 100 * (after["accuracy"] - before["accuracy"]) / (sum(iteration_s) / 60)


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: Optional[float], digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_markdown(ablation: Ablation, rows: list[dict], command: str) -> str:
    """The ablation's table: held-out pass@1 before -> after per arm, per level, pass@k, tokens, time."""
    levels = sorted({lv for r in rows for lv in r["after_per_level"]}, key=int)
    head = (["arm", "pass@1 before", "pass@1 after", "gain"] + [f"L{lv} after" for lv in levels]
            + ["pass@k before", "pass@k after", "tokens before", "tokens after", "s / iteration",
               "s / 1k sampled tokens", "gain / min"] + [f"mean {c}" for c in ablation.curves])
    lines = [f"# Ablation `{ablation.name}`", "", f"Claim: {ablation.claim}.", "", f"Command: `{command}`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ([r["arm"], _pct(r["before"]), _pct(r["after"]),
                  "-" if r["gain"] is None else f"{100 * r['gain']:+.1f}"]
                 + [_pct(r["after_per_level"].get(lv)) for lv in levels]
                 + [_pct(r["pass_at_k_before"]), _pct(r["pass_at_k_after"]), _num(r["tokens_before"]),
                    _num(r["tokens_after"]), _num(r["iteration_s"], 2), _num(r["s_per_1k_sampled_tokens"], 3),
                    _num(r.get("gain_per_minute"), 2)]
                 + [_num(r["curve_means"].get(c), 3) for c in ablation.curves])
        lines.append("| " + " | ".join(cells) + " |")
    k = next((r["k"] for r in rows if r["k"]), None)
    lines += ["", f"Held-out pass@1 and pass@k (k = {k}, the samples per problem) in %; levels: digits per operand; "
                  "tokens: mean held-out response tokens; s / iteration: an iteration's wall time, rollout to weight "
                  "sync (held-out evaluations between iterations excluded); gain / min: pass@1 points gained per "
                  "minute of RL iterations (arms compared at equal wall-clock); curves: means over the run's "
                  "iterations.", "",
              "Arm folders (TensorBoard events in <folder>/tb/rl): "
              + "; ".join(f"{r['arm']}: {r['folder']}" for r in rows)]
    return "\n".join(lines) + "\n"


def plot_curves(ablation: Ablation, scalars: dict[str, dict[str, dict[int, float]]], rows: list[dict],
                path: Path) -> Path:
    """One panel per curve tag (each arm a line against the iteration) and one of held-out pass@1 per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(ablation.curves) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8), squeeze=False)
    try:
        for ax, tag in zip(axes[0], ablation.curves):
            for arm, tags in scalars.items():
                points = sorted(tags.get(tag, {}).items())
                if points:
                    ax.plot([s for s, _ in points], [v for _, v in points], label=arm, marker=".")
            ax.set_title(tag)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax = axes[0][-1]
        names = [r["arm"] for r in rows]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [100 * (r["before"] or 0) for r in rows], width=0.4, label="before")
        ax.bar([x + 0.2 for x in xs], [100 * (r["after"] or 0) for r in rows], width=0.4, label="after")
        ax.set_xticks(list(xs), names, fontsize=8)
        ax.set_title("held-out pass@1 (%)")
        ax.legend(fontsize=8, loc="lower right")
        fig.suptitle(textwrap.fill(f"{ablation.name}: {ablation.claim}", 40 * panels), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def run_arm(cfg: Config) -> dict:
    """One arm: ``kimi-rl train`` with ``cfg`` (warm-up from the cache); its result, also in the arm's folder."""
    from kimi_rl.pipeline import train

    done = train(cfg)
    result = {"arm_key": arm_key(cfg), "seconds": round(done.rl_seconds, 1),
              "iterations": cfg.rl.iterations, "warm_up": str(done.warm_up),
              "eval": {k: v.to_dict() for k, v in done.results.items()}}
    if is_rank_zero():
        (done.paths.root / RESULT_FILE).write_text(json.dumps(result, indent=1))
    return result


ARM_SECTIONS = ("run", "model", "data", "sft", "algo", "rollout", "trainer", "rl", "eval", "phase")
"""The config sections an arm (``kimi-rl train``) reads; the tools' sections (bench, curate, ...) do not matter."""


def arm_key(cfg: Config) -> str:
    """What an arm's result depends on: its training sections except ``run.name`` (identical arms of two
    ablations, e.g. the default recipe, run once)."""
    body = {k: v for k, v in dataclasses.asdict(cfg).items() if k in ARM_SECTIONS}
    body["run"].pop("name")
    return config_hash(body)


def finished_arm(cfg: Config) -> Optional[tuple[Path, dict]]:
    """``(folder, result)`` of a finished arm with this config: the arm's own folder first, then any other
    ablation's arm under the same ``ablations/`` folder; None if there is none."""
    own = RunPaths(cfg.run.dir, cfg.run.name).root
    key = arm_key(cfg)
    for path in [own / RESULT_FILE] + sorted(own.parent.parent.glob(f"*/*/{RESULT_FILE}")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if result.get("arm_key") == key:
            return path.parent, result
    return None


def preflight(configs: dict[str, Config]) -> None:
    """What would fail late in some arm fails before the first one runs: model folders, verifiers (e.g. a
    reward model not made yet)."""
    from kimi_rl.models.modeling import check_model_folder
    from kimi_rl.pipeline import check_verifier

    for arm, cfg in configs.items():
        if finished_arm(cfg) is not None:
            continue
        try:
            if cfg.model.path:
                check_model_folder(cfg.model.path)
            if cfg.data.verifier:
                check_verifier(cfg.data.verifier, cfg.data.verifier_options, "rl")
        except ConfigError as e:
            raise ConfigError(f"arm '{arm}': {e}") from None


@dataclass
class AblationReport:
    folder: Path
    rows: list[dict]
    table_md: Path
    table_json: Path
    plot: Path


def run_ablation(name: str, overrides: list[str], conf_dir: Optional[Path] = None) -> AblationReport:
    """Run (or reuse) every arm of ablation ``name``, then write its table and plot."""
    settings, ablations = load_ablations(conf_dir)
    if name not in ablations:
        raise ConfigError(f"ablation '{name}' is not in conf/{ABLATIONS_FILE}; choices: {', '.join(ablations)}, all")
    ablation = ablations[name]
    configs = arm_configs(ablation, settings, overrides, conf_dir)
    first = next(iter(configs.values()))
    folder = RunPaths(first.run.dir, first.run.name).root.parent
    command = "kimi-rl ablate " + " ".join([name] + list(overrides))
    preflight(configs)
    results, scalars = {}, {}
    for i, (arm, cfg) in enumerate(configs.items()):
        set_log_file(folder / "kimi-rl.log")
        own = RunPaths(cfg.run.dir, cfg.run.name).root
        found = finished_arm(cfg)
        if found is not None:
            where, done = found
            log(f"ablation {name}: arm {arm} ({i + 1}/{len(configs)}) already finished with this config"
                + ("" if where == own else f" in {where}") + "; reusing it")
        else:
            log(f"ablation {name}: arm {arm} ({i + 1}/{len(configs)}): {' '.join(ablation.arms[arm]) or 'the defaults'}")
            where, done = own, run_arm(cfg)
            set_log_file(folder / "kimi-rl.log")
            log(f"ablation {name}: arm {arm} done in {done['seconds']:.0f} s")
        results[arm] = {**done, "folder": str(where)}
        scalars[arm] = read_scalars(where / "tb" / "rl")
    rows = [arm_row(arm, results[arm], scalars[arm], ablation.curves) for arm in configs]
    md, js, png = folder / "table.md", folder / "table.json", folder / "curves.png"
    if is_rank_zero():
        folder.mkdir(parents=True, exist_ok=True)
        md.write_text(format_markdown(ablation, rows, command))
        js.write_text(json.dumps({"ablation": ablation.name, "claim": ablation.claim, "command": command,
                                  "arms": {a: ablation.common + w for a, w in ablation.arms.items()},
                                  "settings": settings, "overrides": list(overrides), "rows": rows}, indent=1))
        plot_curves(ablation, scalars, rows, png)
    return AblationReport(folder=folder, rows=rows, table_md=md, table_json=js, plot=png)


def run_ablate_command(args: list[str]) -> int:
    """``kimi-rl ablate NAME|all [overrides]``."""
    settings, ablations = load_ablations()
    if not args or "=" in args[0]:
        raise ConfigError(f"kimi-rl ablate NAME [overrides]: name one of {', '.join(ablations)}, or all")
    names = list(ablations) if args[0] == "all" else [args[0]]
    for name in names:
        report = run_ablation(name, args[1:])
        log(report.table_md.read_text() + f"\ntable: {report.table_md}\nplot: {report.plot}")
    return 0
