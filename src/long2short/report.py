"""The long2short comparison (k1.5 section 2.4, figure 7): held-out accuracy against mean response tokens
of the long-CoT model and each short model, written as a JSON table and a PNG plot.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from kimi_rl.eval.evaluate import EvalResult


@dataclass
class Long2ShortRow:
    method: str
    """long | merge | merge_srs | dpo | rl."""
    model: str
    """The evaluated HF folder."""
    accuracy: float
    """Held-out pass@1."""
    mean_tokens: float
    p95_tokens: Optional[float]
    token_ratio: float
    """mean_tokens / the long model's mean_tokens (1.0 for the long model)."""
    details: dict = field(default_factory=dict)
    """What building the model recorded (rows, pairs and skipped problems, RL iterations)."""


@dataclass
class Long2ShortReport:
    rows: list[Long2ShortRow]
    results: dict[str, EvalResult]
    """Every model's full held-out evaluation, by method."""
    table_path: Path
    plot_path: Path


def table_rows(models: dict[str, Path], results: dict[str, EvalResult],
               details: dict[str, dict]) -> list[Long2ShortRow]:
    """One row per model, in ``models`` order; ``models`` must hold ``long``, the reference length."""
    long_tokens = results["long"].mean_tokens
    return [Long2ShortRow(method=name, model=str(folder), accuracy=results[name].accuracy,
                          mean_tokens=results[name].mean_tokens, p95_tokens=results[name].p95_tokens,
                          token_ratio=results[name].mean_tokens / long_tokens if long_tokens else float("nan"),
                          details=details.get(name, {}))
            for name, folder in models.items()]


def format_rows(rows: list[Long2ShortRow]) -> str:
    """Method, accuracy (%), mean and p95 tokens, and tokens relative to the long model."""
    head = f"{'method':<10} | {'acc %':>6} | {'mean tok':>8} | {'p95 tok':>7} | {'vs long':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        p95 = f"{r.p95_tokens:>7.1f}" if r.p95_tokens is not None else f"{'-':>7}"
        lines.append(f"{r.method:<10} | {100 * r.accuracy:>6.1f} | {r.mean_tokens:>8.1f} | {p95} | "
                     f"{r.token_ratio:>6.2f}x")
    return "\n".join(lines)


def plot_accuracy_vs_tokens(rows: list[Long2ShortRow], path: Path) -> Path:
    """Scatter of held-out accuracy (%) against mean response tokens, one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    try:
        for r in rows:
            marker = "s" if r.method == "long" else "o"
            ax.scatter([r.mean_tokens], [100 * r.accuracy], marker=marker, s=60)
            ax.annotate(r.method, (r.mean_tokens, 100 * r.accuracy), textcoords="offset points", xytext=(6, 4))
        ax.set_xlabel("mean response tokens (held-out)")
        ax.set_ylabel("accuracy, pass@1 (%)")
        ax.set_title("long2short: accuracy vs response length")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def write_report(folder: Path, models: dict[str, Path], results: dict[str, EvalResult],
                 details: dict[str, dict]) -> Long2ShortReport:
    """``folder/table.json`` (rows + every model's full evaluation) and ``folder/accuracy_vs_tokens.png``."""
    rows = table_rows(models, results, details)
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "table.json"
    table.write_text(json.dumps({"rows": [asdict(r) for r in rows],
                                 "eval": {k: v.to_dict() for k, v in results.items()}}, indent=1))
    plot = plot_accuracy_vs_tokens(rows, folder / "accuracy_vs_tokens.png")
    return Long2ShortReport(rows=rows, results=results, table_path=table, plot_path=plot)
