"""Exact resume after SIGKILL, and clear errors for bad checkpoints or changed model shapes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kimi_rl.config import ConfigError
from kimi_rl.rl.module import check_model_shape
from kimi_rl.pipeline import check_checkpoint
from tb_scalars import event_scalars

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def cli(args, cwd) -> list[str]:
    return [sys.executable, "-m", "kimi_rl.cli", *args]


def test_truncated_checkpoint_is_a_clear_error_and_previous_survives(tmp_path):
    good = tmp_path / "previous.ckpt"
    torch.save({"state_dict": {}, "kimi_rl": {"iteration": 1}}, good)
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ConfigError, match=r"corrupt or truncated.*previous checkpoint is .*previous.ckpt"):
        check_checkpoint(bad)
    check_checkpoint(good)
    assert good.is_file()
    torch.save({"weights": 1}, bad)
    with pytest.raises(ConfigError, match="not a Lightning checkpoint"):
        check_checkpoint(bad)


def test_changed_model_shape_names_the_key():
    check_model_shape({"hidden_size": 64}, {"hidden_size": 64})
    with pytest.raises(ConfigError, match=r"model.hidden_size: .*hidden_size=64.*now gives 128"):
        check_model_shape({"hidden_size": 64, "num_hidden_layers": 2}, {"hidden_size": 128, "num_hidden_layers": 2})
    with pytest.raises(ConfigError, match=r"model.num_layers"):
        check_model_shape({"num_hidden_layers": 2}, {"num_hidden_layers": 4})


@pytest.mark.slow
def test_interrupted_runs_resume_to_the_uninterrupted_run(tiny_model_dir, tmp_path):
    """One run interrupted twice, each time resumed with run.resume=auto, must give the uninterrupted run's numbers:
    Ctrl-C (SIGINT: the iteration finishes, a checkpoint is written, one line says so, exit 130, no traceback, no
    final model), then, in the resumed run, SIGKILL inside an iteration with last.ckpt then truncated (a kill while
    writing: auto falls back to previous.ckpt, one iteration earlier); the run resumed from there writes the final
    model. Four processes (the uninterrupted run and three pieces of the interrupted one), not five: each costs
    ~35 s of CPU, mostly imports and vLLM's start."""
    common = ["train", f"model.path={tiny_model_dir}", "sft.enabled=false", "data.levels=[1,2]", "data.curriculum=[]",
              "data.train_per_level=60", "data.heldout_per_level=6", "rl.iterations=8", "rl.checkpoint_every=1",
              "rl.sample_log_every=0", "rollout.prompts_per_iteration=4", "rollout.samples_per_prompt=4",
              "rollout.max_response_tokens=16", "rollout.segment_tokens=8", "rollout.kv_cache_gib=0.25",
              "algo.minibatch_size=8", "algo.reset_optimizer=false", "eval.samples=1",
              "algo.skip_uninformative_groups=false",  # reward-0 groups still train: losses are compared
              "eval.max_problems_per_level=3", f"run.dir={tmp_path}", "trainer.threads=1"]
    env = {**os.environ, "KIMI_RL_CONF": CONF}
    # each run uses one thread (trainer.threads=1): the uninterrupted run goes alongside the first piece of the
    # interrupted one (the numbers do not depend on it)
    def start(name: str, piece: int) -> tuple[subprocess.Popen, Path]:
        """Piece ``piece`` of run ``name`` in the background (> 0: resumed), its output in a file (a pipe nobody
        reads yet could fill and block it)."""
        log = tmp_path / f"{name}-{piece}.out"
        with open(log, "w") as out:
            extra = ["run.resume=auto"] if piece else []
            proc = subprocess.Popen(cli(common + [f"run.name={name}", *extra], tmp_path), cwd=tmp_path, env=env,
                                    stdout=out, stderr=subprocess.STDOUT, text=True)
        return proc, log

    def finish(run: tuple[subprocess.Popen, Path]) -> str:
        """Wait for the run; its output, after asserting it succeeded."""
        proc, log = run
        proc.wait(timeout=900)
        out = log.read_text()
        assert proc.returncode == 0, out[-4000:]
        return out

    ckpts = tmp_path / "twice" / "checkpoints"

    def saved_iteration() -> int:
        """The iteration of last.ckpt (written atomically: a temp file, then a rename), 0 when none yet."""
        try:
            return torch.load(ckpts / "last.ckpt", weights_only=False)["kimi_rl"]["iteration"]
        except (FileNotFoundError, EOFError, RuntimeError):
            return 0

    def interrupt(piece: int, sig: int, after: int) -> int:
        """Start piece ``piece`` of the run, send ``sig`` once last.ckpt holds iteration ``after`` and
        previous.ckpt the one before (so inside iteration after + 1); the last checkpoint's iteration."""
        proc, log = start("twice", piece)
        deadline = time.time() + 600
        while saved_iteration() < after and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.kill(proc.pid, sig)
        proc.wait(timeout=600)
        err = log.read_text()
        at = saved_iteration()
        if sig == signal.SIGINT:  # a clean stop: said in one line, no traceback, no final model yet
            assert proc.returncode == 130, err[-3000:]
            assert f"[kimi-rl] stopped by SIGINT after iteration {at}; checkpoint {ckpts / 'last.ckpt'}" in err
            assert "Traceback" not in err and not (tmp_path / "twice" / "final_model").exists()
        return at

    straight = start("straight", 0)
    stopped_at = interrupt(0, signal.SIGINT, after=2)
    assert 3 <= stopped_at < 5  # the iteration running at Ctrl-C finished and was saved

    finish(straight)
    a = event_scalars(tmp_path / "straight" / "tb" / "rl")
    # without algo.reset_optimizer Adam's state keeps counting across iterations (the reset is tested in test_rl)
    trained = sorted(a["train/optimizer_steps"])  # iterations that released groups
    steps = [a["train/optimizer_steps"][i] for i in trained]
    assert len(trained) >= 2 and sorted(a["train/optimizer_state_steps"]) == trained
    assert [a["train/optimizer_state_steps"][i] for i in trained] == [sum(steps[:j + 1]) for j in range(len(steps))]

    killed_at = interrupt(1, signal.SIGKILL, after=stopped_at + 1)  # the resumed run wrote last and previous
    assert stopped_at + 1 <= killed_at < 8
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # as if the kill had hit the save
    assert "resuming from" in finish(start("twice", 2))
    b = event_scalars(tmp_path / "twice" / "tb" / "rl")
    compared = 0
    for tag in ("reward/mean", "response/length_mean", "train/loss", "train/entropy_estimate",
                "rollout/new_tokens", "rollout/buffer_unfinished", "train/optimizer_state_steps"):
        for step, value in a[tag].items():  # groups finish every other iteration: not every step has all tags
            if step >= stopped_at:  # from the first resume on; the second one went back to killed_at - 1
                assert b[tag][step] == pytest.approx(value, abs=1e-4), (tag, step)
                compared += 1
    assert compared >= 8, compared
    assert torch.load(last, weights_only=False)["kimi_rl"]["iteration"] == 8
    assert (tmp_path / "twice" / "final_model" / ".done").is_file()


# ---- run.resume=auto falls back to previous.ckpt; SIGINT / SIGTERM save and stop (issue 16, item 7)

def _good_checkpoint(path: Path, iteration: int) -> Path:
    torch.save({"state_dict": {}, "kimi_rl": {"iteration": iteration}}, path)
    return path


def test_resume_auto_falls_back_to_previous_when_last_is_unreadable(tmp_path, capsys):
    from kimi_rl.config.loader import load_config
    from kimi_rl.pipeline import resume_path
    from kimi_rl.runs import RunPaths

    cfg = load_config([f"run.dir={tmp_path}", "run.name=r", "run.resume=auto"])
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    assert resume_path(cfg, paths) is None  # nothing saved yet: a fresh start
    paths.checkpoints.mkdir(parents=True)
    previous = _good_checkpoint(paths.checkpoints / "previous.ckpt", 2)
    last = paths.checkpoints / "last.ckpt"
    last.write_bytes(previous.read_bytes()[:50])  # a kill while writing
    assert resume_path(cfg, paths) == str(previous)
    out = capsys.readouterr().out
    assert f"run.resume=auto: {last} is corrupt or truncated" in out and f"resuming from {previous}" in out
    assert not last.exists() and (paths.checkpoints / "last.ckpt.corrupt").is_file()  # never rotated into previous
    assert resume_path(cfg, paths) == str(previous)  # only previous.ckpt (a kill between the renames)
    _good_checkpoint(last, 3)
    assert resume_path(cfg, paths) == str(last)
    last.write_bytes(b"junk")
    previous.write_bytes(b"junk")
    with pytest.raises(ConfigError, match=r"run.resume=auto: checkpoint '.*last.ckpt' is corrupt or truncated .*, "
                                          r"and '.*previous.ckpt' is corrupt or truncated"):
        resume_path(cfg, paths)


class _Counter:
    """A LightningModule counting iterations like KimiRLModule; raises ``signums`` during one iteration."""

    @staticmethod
    def make(signal_at: int, signums: tuple[int, ...]):
        import lightning as L

        class Counter(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.layer = torch.nn.Linear(1, 1)
                self.iteration = 0

            def training_step(self, batch, batch_idx):
                if self.iteration == signal_at:
                    for signum in signums:
                        signal.raise_signal(signum)  # as if the user pressed Ctrl-C during this iteration
                self.iteration += 1
                return self.layer(batch).sum()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

            def train_dataloader(self):
                return torch.utils.data.DataLoader(torch.ones(20, 1), batch_size=1)

            def on_save_checkpoint(self, checkpoint) -> None:
                checkpoint["kimi_rl"] = {"iteration": self.iteration}

        return Counter()


def _fit(tmp_path, module, every: int = 0, iterations: int = 6) -> Path:
    import lightning as L

    from kimi_rl.callbacks import IterationCheckpoint

    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=iterations, logger=False,
                        callbacks=[IterationCheckpoint(tmp_path / "ckpt", every)], enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1)
    trainer.fit(module)
    return tmp_path / "ckpt" / "last.ckpt"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_at_the_end_of_the_iteration_and_stops(tmp_path, capfd, signum):
    from kimi_rl.callbacks.checkpoint import TrainingInterrupted

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(TrainingInterrupted) as err:
        _fit(tmp_path, _Counter.make(signal_at=2, signums=(signum,)), every=0)
    assert err.value.iteration == 3 and err.value.exit_code == 128 + signum
    assert str(err.value) == (f"stopped by {signal.Signals(signum).name} after iteration 3; checkpoint "
                              f"{tmp_path / 'ckpt' / 'last.ckpt'}; continue with run.resume=auto")
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["kimi_rl"]["iteration"] == 3
    assert not (tmp_path / "ckpt" / "previous.ckpt").exists()  # one save: the one the signal asked for
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored
    assert "stopping after this iteration with a checkpoint" in capfd.readouterr().err


def test_signal_in_the_last_iteration_just_finishes(tmp_path):
    last = _fit(tmp_path, _Counter.make(signal_at=5, signums=(signal.SIGINT,)), every=0, iterations=6)
    assert torch.load(last, weights_only=False)["kimi_rl"]["iteration"] == 6


def test_second_signal_stops_at_once_without_a_checkpoint(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises((KeyboardInterrupt, SystemExit)):  # Lightning turns KeyboardInterrupt into exit(1)
            _fit(tmp_path, _Counter.make(signal_at=1, signums=(signal.SIGINT, signal.SIGINT)), every=0)
        assert not (tmp_path / "ckpt" / "last.ckpt").exists()
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_finished_run_cannot_silently_continue(tmp_path):
    from kimi_rl.config.loader import load_config
    from kimi_rl.pipeline import resume_path
    from kimi_rl.runs import RunPaths

    paths = RunPaths(str(tmp_path), "r")
    paths.checkpoints.mkdir(parents=True)
    epoch_over = {"fit_loop": {"epoch_progress": {"current": {"completed": 1}}}}  # what a run's end saves
    torch.save({"state_dict": {}, "kimi_rl": {"iteration": 4}, "loops": epoch_over}, paths.checkpoints / "last.ckpt")
    same = load_config([f"run.dir={tmp_path}", "run.name=r", "run.resume=auto", "rl.iterations=4"])
    assert resume_path(same, paths) == str(paths.checkpoints / "last.ckpt")
    more = load_config([f"run.dir={tmp_path}", "run.name=r", "run.resume=auto", "rl.iterations=6"])
    with pytest.raises(ConfigError, match=r"end of a finished run of 4 iterations; it cannot be continued to "
                                          r"rl.iterations=6"):
        resume_path(more, paths)
