"""The ``kimi-rl`` command: ``kimi-rl <command> [group=name] [section.key=value] ...``."""
from __future__ import annotations

import argparse
import sys

from kimi_rl.config import ConfigError
from kimi_rl.runs import set_log_file

COMMANDS = {
    "sft": "long-CoT SFT warm-up, then held-out accuracy per level",
    "train": "SFT warm-up (cached) then RL; held-out accuracy before and after",
    "eval": "evaluate model folders on a dataset",
    "import-smollm2": "write SmolLM2-135M-Instruct (offline) as an HF folder [OUT=runs/models/smollm2]",
    "merge": "average two HF model folders: merge LONG SHORT OUT [WEIGHT of LONG, default 0.5]",
    "long2short": "four short models (merge, merge+SRS, DPO, RL) from the run's long-CoT model, compared",
    "difficulty": "label a problem file's difficulty by a model's pass rate over n samples [difficulty.KEY=VALUE]",
    "make-tests": "tests for code problems from generators, judged by reference submissions [make_tests.KEY=VALUE]",
    "curate": "drop easy-to-hack problems: the model guesses the answer without CoT [curate.KEY=VALUE]",
    "reward-model": "classic and chain-of-thought reward models from the policy's samples, vs the rule "
                    "[reward_model.KEY=VALUE]",
    "bench": "benchmarks: partial vs full rollouts, sandbox starts/s [bench.KEY=VALUE]",
    "ablate": "one of the paper's claims: ablate NAME|all [overrides]; arms side by side in runs/ablations/NAME "
              "(conf/ablations.yaml)",
}


def cmd_sft(overrides: list[str]) -> int:
    from kimi_rl.config.loader import load_config
    from kimi_rl.eval.evaluate import format_table, samples_phrase
    from kimi_rl.pipeline import base_model, evaluate_folder, log, prepare, run_sft, write_eval

    cfg = load_config(overrides)
    paths, task = prepare(cfg)
    model_dir = run_sft(cfg, paths, task, base_model(cfg, paths))
    from kimi_rl.runs import is_rank_zero

    if is_rank_zero():
        res = {"sft": evaluate_folder(cfg, model_dir, task, "sft")}
        write_eval(paths, res, "eval_sft.json")
        log(f"held-out accuracy (pass@1 over {samples_phrase(res.values(), cfg.eval.samples)}, "
            f"T={cfg.eval.temperature}):\n"
            + format_table(res))
        log(f"SFT model: {model_dir}")
    return 0


def cmd_train(overrides: list[str]) -> int:
    from kimi_rl.config.loader import load_config
    from kimi_rl.eval.evaluate import format_summary, format_table, samples_phrase
    from kimi_rl.pipeline import log, train

    cfg = load_config(overrides)
    done = train(cfg)
    if not cfg.rl.enabled:
        log(f"rl.enabled is false; the model is {done.warm_up}")
        return 0
    if done.results:
        named = {f"{k} RL": v for k, v in done.results.items()}
        log(f"held-out pass@1 over {samples_phrase(named.values(), cfg.eval.samples)} at T={cfg.eval.temperature}, "
            "before and after RL:\n"
            + format_table(named) + "\n" + format_summary(named))
    log(f"final model: {done.final}\nTensorBoard: make tensorboard (logs in {done.paths.root / 'tb'})")
    return 0


def cmd_eval(overrides: list[str]) -> int:
    """``kimi-rl eval [models=NAME:PATH,...] [split=heldout|all] [overrides]`` (see kimi_rl.eval.command)."""
    from kimi_rl.eval.command import run_eval

    return run_eval(overrides)


def cmd_import_smollm2(overrides: list[str]) -> int:
    """``kimi-rl import-smollm2 [OUT]``: the folder conf/model/smollm2.yaml points at."""
    from kimi_rl.models.import_smollm2 import main as import_main

    return import_main(overrides or ["runs/models/smollm2"])


def cmd_merge(args: list[str]) -> int:
    """``kimi-rl merge LONG SHORT OUT [WEIGHT]``: ``WEIGHT * long + (1 - WEIGHT) * short`` into OUT."""
    from kimi_rl.long2short.methods import merge_models
    from kimi_rl.models.modeling import check_model_folder

    if len(args) not in (3, 4):
        raise ConfigError(f"merge takes LONG SHORT OUT [WEIGHT] (model folders, weight of LONG), got {args}")
    long_dir, short_dir = check_model_folder(args[0], "LONG"), check_model_folder(args[1], "SHORT")
    try:
        weight = float(args[3]) if len(args) == 4 else 0.5
    except ValueError:
        raise ConfigError(f"WEIGHT: '{args[3]}' is not a number in [0, 1]") from None
    try:
        out = merge_models(long_dir, short_dir, args[2], weight)
    except ValueError as e:
        print(f"kimi-rl merge: {e}", file=sys.stderr)
        return 2
    print(f"[kimi-rl] merged {weight} x {long_dir} + {1 - weight:g} x {short_dir} -> {out}")
    return 0


def cmd_bench(overrides: list[str]) -> int:
    """``kimi-rl bench [bench.KEY=VALUE ...]`` (see kimi_rl.bench)."""
    from kimi_rl.bench import main as bench_main

    return bench_main(overrides)


def cmd_difficulty(overrides: list[str]) -> int:
    """``kimi-rl difficulty [overrides] [difficulty.KEY=VALUE]`` (see kimi_rl.eval.difficulty)."""
    from kimi_rl.eval.difficulty import run_difficulty

    return run_difficulty(overrides)


def cmd_make_tests(overrides: list[str]) -> int:
    """``kimi-rl make-tests [make_tests.KEY=VALUE ...]`` (see kimi_rl.data.make_tests)."""
    from kimi_rl.data.make_tests import run_make_tests

    return run_make_tests(overrides)


def cmd_curate(overrides: list[str]) -> int:
    """``kimi-rl curate [overrides] [curate.KEY=VALUE ...]`` (see kimi_rl.data.curate)."""
    from kimi_rl.data.curate import run_curate

    return run_curate(overrides)


def cmd_reward_model(overrides: list[str]) -> int:
    """``kimi-rl reward-model [overrides] [reward_model.KEY=VALUE ...]`` (see kimi_rl.rewards.training)."""
    from kimi_rl.rewards.training import run_reward_model

    return run_reward_model(overrides)


def cmd_long2short(overrides: list[str]) -> int:
    """``kimi-rl long2short [overrides] [long2short.KEY=VALUE]`` (see kimi_rl.long2short.stages)."""
    from kimi_rl.config.loader import load_config
    from kimi_rl.eval.evaluate import format_table, samples_phrase
    from kimi_rl.long2short.report import format_rows
    from kimi_rl.long2short.stages import run_long2short
    from kimi_rl.pipeline import log

    cfg = load_config(overrides)
    report = run_long2short(cfg, cfg.long2short)
    log(f"held-out pass@1 over {samples_phrase(report.results.values(), cfg.eval.samples)} at "
        f"T={cfg.eval.temperature}:\n" + format_rows(report.rows))
    log("per level:\n" + format_table(report.results))
    log(f"table: {report.table_path}\nplot: {report.plot_path}")
    return 0


def cmd_ablate(args: list[str]) -> int:
    """``kimi-rl ablate NAME|all [overrides]`` (see kimi_rl.ablate; the ablations are in conf/ablations.yaml)."""
    from kimi_rl.ablate import run_ablate_command

    return run_ablate_command(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kimi-rl",
        description="Kimi k1.5 RL recipe on Lightning. Overrides: group=name or section.key=value.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {k:<10} {v}" for k, v in COMMANDS.items()),
    )
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("overrides", nargs="*", help="config overrides")
    args = parser.parse_args(argv)
    handlers = {"sft": cmd_sft, "train": cmd_train, "eval": cmd_eval, "import-smollm2": cmd_import_smollm2,
                "merge": cmd_merge, "long2short": cmd_long2short, "bench": cmd_bench,
                "difficulty": cmd_difficulty, "make-tests": cmd_make_tests, "curate": cmd_curate,
                "reward-model": cmd_reward_model, "ablate": cmd_ablate}
    set_log_file(None)  # a command names its run's log file (prepare); none from an earlier command lingers
    try:
        return handlers[args.command](args.overrides)
    except ConfigError as e:
        print(f"kimi-rl: config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # errors that speak to the user: bad data rows, an engine that cannot start
        if type(e).__name__ == "TrainingInterrupted":  # SIGINT / SIGTERM: checkpoint written, clean stop
            from kimi_rl.runs import is_rank_zero

            if is_rank_zero():
                print(f"[kimi-rl] {e}", file=sys.stderr, flush=True)
            return e.exit_code  # type: ignore[attr-defined]
        if type(e).__name__ in USER_ERRORS:
            print(f"kimi-rl: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        raise


USER_ERRORS = {"EngineError", "DataFileError", "CodeTaskError", "SandboxUnavailable", "MakeTestsError"}
"""Exceptions reported as one line (exit code 2) instead of a traceback."""


if __name__ == "__main__":
    sys.exit(main())
