"""SampleLogger: every N iterations, write a few completions with their rewards to TensorBoard (text; for a problem
with images also an image panel: the problem's images above its sampled answers, under ``samples/images/<k>``)."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from kimi_rl.rewards.scoring import decode
from kimi_rl.rl.iteration import Iteration
from kimi_rl.tasks.vision import problem_images


def image_panel(images, lines: list[str], scale: int = 3, width_chars: int = 60):
    """One RGB PIL image: ``images`` side by side, enlarged ``scale`` x (nearest: pixels stay visible), above
    ``lines`` of text wrapped at ``width_chars`` (Pillow's default font), black on white."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    big = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    text = [w for line in lines for w in (textwrap.wrap(line, width_chars) or [""])]
    line_h = 12
    width = max(sum(im.width for im in big) + 4 * len(big), 6 * width_chars + 8)
    top = max((im.height for im in big), default=0) + 8
    panel = Image.new("RGB", (width, top + line_h * len(text) + 8), "white")
    x = 4
    for im in big:
        panel.paste(im, (x, 4))
        x += im.width + 4
    draw = ImageDraw.Draw(panel)
    for i, line in enumerate(text):
        draw.text((4, top + i * line_h), line, fill="black", font=font)
    return panel


class SampleLogger(Callback):
    def __init__(self, tokenizer, every: int = 10, groups: int = 2) -> None:
        if every < 0 or groups < 1:
            raise ValueError("SampleLogger: every must be >= 0 and groups >= 1")
        self.tokenizer, self.every, self.groups = tokenizer, every, groups

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Iteration,
                           batch_idx: int) -> None:
        it = batch.index
        if not self.every or it is None or it % self.every or not trainer.is_global_zero or trainer.logger is None:
            return
        groups = batch.rollouts.groups if batch.rollouts is not None else []
        if not groups:
            return
        lines = []
        for g in groups[: self.groups]:
            lines.append(f"### {g.problem.question}  (answer {g.problem.answer})")
            for t in g.trajectories:
                text = decode(self.tokenizer, t.response_ids)
                lines.append(f"- reward {t.reward:+.2f}, {len(t.response_ids)} tokens, {t.finish_reason}:\n\n```\n{text}\n```")
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_text"):
            experiment.add_text("samples", "\n\n".join(lines), global_step=it)
        if experiment is not None and hasattr(experiment, "add_image"):
            self._log_images(experiment, groups[: self.groups], it)

    def _log_images(self, experiment, groups, it: int) -> None:
        """Each shown group whose problem has images: its images above its answers (reward, last line)."""
        import numpy as np

        for k, g in enumerate(groups):
            images = problem_images(g.problem)
            if not images:
                continue
            lines = [f"answer {g.problem.answer}"]
            for t in g.trajectories:
                text = decode(self.tokenizer, t.response_ids).strip().splitlines()
                lines.append(f"{t.reward:+.2f} {len(t.response_ids)} tok: {text[-1] if text else ''}")
            panel = np.asarray(image_panel(images, lines))
            experiment.add_image(f"samples/images/{k}", panel, global_step=it, dataformats="HWC")
