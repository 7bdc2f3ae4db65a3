import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from kimi_rl.config import ConfigError, DataConfig, SFTConfig, TrainerConfig
from kimi_rl.models.modeling import check_model_folder, load_model, load_tokenizer
from kimi_rl.pipeline import save_policy
from kimi_rl.sft import (SFTDataModule, SFTModule, TraceStream, bucket_batches, collate, response_nll,
                         traces_per_problem, warmup_cosine)
from kimi_rl.tasks.arithmetic import make_problems
from kimi_rl.trainer_factory import build_trainer


def test_bucket_batches_respect_budget_and_cover_all():
    lengths = [random.Random(i).randint(5, 100) for i in range(500)]
    batches = bucket_batches(lengths, 400, random.Random(0), pool=128)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(500))
    assert all(len(b) * max(lengths[i] for i in b) <= 400 for b in batches)


def test_a_small_level_repeats_its_problems_up_to_min_traces_per_level():
    from kimi_rl.data.problem import Problem

    problems = [Problem(uid=str(i), question="1+1=", answer="2", difficulty=d) for i, d in enumerate([1, 1, 2, 2, 2, 2])]
    assert traces_per_problem(problems, 1, 0) == [1] * 6  # off
    assert traces_per_problem(problems, 1, 4) == [2, 2, 1, 1, 1, 1]  # level 1: ceil(4 / 2) each
    assert traces_per_problem(problems, 1, 5) == [3, 3, 2, 2, 2, 2]  # ceil(5 / 2), ceil(5 / 4)
    assert traces_per_problem(problems, 3, 4) == [3] * 6  # never below traces_per_problem


def test_the_trace_stream_draws_each_level_at_least_min_traces_per_level(tmp_path):
    from kimi_rl.models.tokenizer import save_char_tokenizer

    train, _ = make_problems([1, 2], 40, 0, seed=0)
    train = [p for p in train if p.difficulty == 2] + [p for p in train if p.difficulty == 1][:10]  # 40 and 10
    stream = TraceStream(train, save_char_tokenizer(tmp_path), DataConfig(), SFTConfig(min_traces_per_level=30), seed=0)
    examples, owners = stream._examples(random.Random(0))
    assert len(examples) == len(owners) == 70
    assert sum(p.difficulty == 1 for p in owners) == 30 and sum(p.difficulty == 2 for p in owners) == 40
    assert all(sum(o.uid == p.uid for o in owners) == 3 for p in train if p.difficulty == 1)  # ceil(30 / 10) each
    default = TraceStream(train, save_char_tokenizer(tmp_path), DataConfig(), SFTConfig(), seed=0)
    assert len(default._examples(random.Random(0))[0]) == 50  # off by default in the dataclass


def test_collate_masks_response_only():
    b = collate([([1, 5, 6], [7, 2]), ([1, 5], [9, 9, 9, 2])], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 5, 6, 7, 2, 0], [1, 5, 9, 9, 9, 2]]
    assert b["loss_mask"].int().tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]


def test_response_nll_on_numbers():
    # uniform logits over 4 tokens: every token has log-prob -log 4
    logits = torch.zeros(1, 3, 4)
    ids = torch.tensor([[1, 2, 3]])
    mask = torch.tensor([[False, True, True]])
    assert response_nll(logits, ids, mask).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())
    # a confident correct prediction of token 3 at the last position lowers the loss
    logits[0, 1, 3] = 10.0
    assert response_nll(logits, ids, mask).item() < 1.0


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.55)


def test_model_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.path: .*does not exist"):
        check_model_folder(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_model_folder(tmp_path / "f.txt")
    with pytest.raises(ConfigError, match="no config.json"):
        check_model_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no .*safetensors"):
        check_model_folder(tmp_path)


def test_sft_through_real_trainer_lowers_loss_and_writes_hf_folder(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    train, _ = make_problems([1, 2], 200, 10, seed=0)
    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir)
    data, sft = DataConfig(levels=[1, 2]), SFTConfig(max_steps=40, tokens_per_step=2048, lr=3e-3, warmup_steps=5)
    dm = SFTDataModule(train, tok, data, sft, seed=0)
    batch = next(iter(SFTDataModule(train, tok, data, sft, seed=0).train_dataloader()))
    with torch.no_grad():
        before = response_nll(model(input_ids=batch["input_ids"]).logits, batch["input_ids"], batch["loss_mask"]).item()
    module = SFTModule(model, sft)
    trainer = build_trainer(TrainerConfig(accelerator="cpu"), tmp_path, "sft", sft.max_steps, [],
                            log_every_n_steps=5, enable_progress_bar=False)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 40
    with torch.no_grad():
        after = response_nll(module.model(input_ids=batch["input_ids"]).logits, batch["input_ids"], batch["loss_mask"]).item()
    assert after < before - 1.0, (before, after)
    out = tmp_path / "hf"
    save_policy(module.model, tok, out, True)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ref = module.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in reloaded.state_dict().items())
    assert list((tmp_path / "tb" / "sft").glob("events.out.tfevents.*"))


def test_sft_cache_key_ignores_rl_only_data_keys(tmp_path):
    from kimi_rl.config.loader import load_config
    from kimi_rl.pipeline import sft_key

    key = sft_key(load_config([]), tmp_path)
    assert sft_key(load_config(["data.sampler=prioritized", "data.priority_floor=0.2"]), tmp_path) == key
    assert sft_key(load_config(["data.levels=[1,2]"]), tmp_path) != key
    assert sft_key(load_config(["sft.max_steps=10"]), tmp_path) != key
    assert sft_key(load_config(["sft.min_traces_per_level=400"]), tmp_path) != key


def test_the_default_warm_up_keeps_the_cache_key_it_had_before_min_traces_per_level(tmp_path):
    """Warm-ups cached before ``sft.min_traces_per_level`` existed stay valid while it is 0 (the key of the default
    config, with the run folder and base model fixed, as computed before the key was added)."""
    from kimi_rl.config.loader import load_config
    from kimi_rl.pipeline import sft_key

    assert sft_key(load_config([]), Path("/nonexistent/base")) == "67bcaeb90aae"  # a changed default changes it too:
    # then update this value, knowing that warm-ups cached under the old key are retrained


def test_a_fresh_run_archives_earlier_events_and_a_resumed_one_appends(tmp_path):
    from kimi_rl.trainer_factory import archive_events

    folder = tmp_path / "tb" / "rl"
    assert archive_events(folder) is None  # nothing there yet
    folder.mkdir(parents=True)
    (folder / "hparams.yaml").write_text("{}")
    assert archive_events(folder) is None  # no event files: nothing to keep apart
    (folder / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    moved = archive_events(folder)
    assert moved is not None and moved.name.startswith("rl.") and (moved / "events.out.tfevents.1.host.1.0").exists()
    assert not folder.exists()
    folder.mkdir()
    (folder / "events.out.tfevents.2.host.1.0").write_bytes(b"y")
    second = archive_events(folder)
    assert second != moved and second.exists() and moved.exists()
