"""Evaluation: pass@k, majority vote and tokens per level (``evaluate``), ``kimi-rl eval`` (``command``),
the torchmetrics (``metrics``), model-based difficulty labels (``difficulty``)."""
