"""Vision-language policies: images reach the engine and the trainer identically (log-probs agree, before and
after an in-place weight sync that changes the vision tower), the image placeholders, the visual task."""
from __future__ import annotations

import io
import random

import pytest
import torch

from kimi_rl.config import DataConfig
from kimi_rl.data.prompts import encode_prompts
from kimi_rl.models.modeling import load_model, load_tokenizer
from kimi_rl.models.vision import ImageLayout, load_processor, row_pixels
from kimi_rl.rl.module import token_logprobs
from kimi_rl.rollout.packing import pack_rows
from kimi_rl.rollout.weights import full_state_dict_for_engine
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.vision import (QUESTION, ImageError, make_problems, make_trace, problem_images, render,
                                  transcribe)


def test_layout_expands_and_contracts_each_placeholder():
    lay = ImageLayout(placeholder=9, block=(7, 8, 9, 9, 9, 7))
    assert lay.expand([1, 9, 2, 9]) == [1, 7, 8, 9, 9, 9, 7, 2, 7, 8, 9, 9, 9, 7]
    assert lay.contract(lay.expand([1, 9, 2, 9])) == [1, 9, 2, 9]
    assert lay.contract([1, 7, 8, 9, 2]) == [1, 7, 8, 9, 2]  # a cut block is left alone
    assert lay.count(lay.expand([9, 3, 9])) == 2


def test_visual_problems_hide_the_numbers_in_the_image():
    train, held = make_problems([1, 2], 50, 10, seed=0)
    assert {p.question for p in train + held} == {QUESTION}
    assert not {p.uid for p in train} & {p.uid for p in held}
    p = held[0]
    a, b = p.meta["render"]
    assert int(p.answer) == a + b
    img = problem_images(p)[0]
    assert img.size == (64, 64) and img.tobytes() == render(a, b).tobytes()  # deterministic
    assert render(a, b).tobytes() != render(a, b + 1).tobytes()
    trace = make_trace(p, random.Random(0), 1, 0.0)
    assert trace.startswith(f"read {transcribe(a, b)}\n") and trace.endswith(f"\\boxed{{{a + b}}}")
    assert transcribe(a, b).replace("_", "") == f"{a}+{b}" and len(transcribe(a, b)) == 8


def test_an_unreadable_image_names_its_problem(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    for src in (str(bad), str(tmp_path / "missing.png"), b"\x00\x01"):
        with pytest.raises(ImageError, match="problem q7: cannot read its image"):
            problem_images(Problem("q7", "<image>what?", "1", meta={"images": [src]}))


def _trainer_logprobs(model, processor, prompts, gens, images, pad_id, packed):
    """The trainer's log-probs of each generation's tokens, rows = prompt + response as in a RolloutBatch."""
    rows = [p + g.token_ids for p, gen_list in zip(prompts, gens) for g in gen_list]
    row_images = [imgs for imgs, gen_list in zip(images, gens) for _ in gen_list]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    lengths = [len(r) for r in rows]
    assert not packed or len(pack_rows(lengths, width)) < len(rows)  # the rows do share packed rows
    with torch.no_grad():
        logp = token_logprobs(model, ids, mask, lengths if packed else None, None, row_pixels(row_images, processor))
    out, i = [], 0
    for p, gen_list in zip(prompts, gens):
        for g in gen_list:
            out.append(logp[i, len(p):len(p) + len(g.token_ids)])
            i += 1
    return out


@pytest.mark.parametrize("engine_name", ["vllm", "hf"])
def test_engine_and_trainer_see_the_same_images(tiny_vl_dir, engine_name):
    """Engine log-probs = trainer log-probs (padded and packed rows) for prompts with different images; then a
    weight sync that changes only the vision tower moves both alike."""
    if engine_name == "vllm":
        from kimi_rl.rollout.engines.vllm import VLLMEngine as Engine
    else:
        from kimi_rl.rollout.engines.hf import HFEngine as Engine
    tok, processor = load_tokenizer(tiny_vl_dir), load_processor(tiny_vl_dir)
    _, problems = make_problems([1, 2, 3], 10, 5, seed=0)
    problems = problems[::3][:4]
    prompts = encode_prompts(problems, tok, DataConfig())
    assert all(tok.image_layout.count(p) == 1 for p in prompts)
    images = [problem_images(p) for p in problems]
    images[2] = [images[2][0].resize((40, 112))]  # a file's image need not be the model's 64 x 64 square
    model = load_model(tiny_vl_dir).eval()
    engine = Engine(tiny_vl_dir, seed=0, max_model_len=512)
    try:
        for step in range(2):
            gens = engine.generate(prompts, [3, 40, 3, 40], n=2, temperature=1.0, top_p=1.0, images=images)
            vision = set(tok.convert_tokens_to_ids(["<image>", "<fake_token_around_image>", "<global-img>"]))
            assert all(not vision & set(g.token_ids) for gs in gens for g in gs)  # never an image slot in a response
            engine_lp = [torch.tensor(g.logprobs) for gs in gens for g in gs]
            for packed in (False, True):
                trainer_lp = _trainer_logprobs(model, processor, prompts, gens, images, tok.pad_token_id, packed)
                err = max(float((a - b).abs().max()) for a, b in zip(engine_lp, trainer_lp))
                assert err < 2e-3, (step, packed, err)
            # swapped images change what the trainer computes: the images are not ignored
            swapped = _trainer_logprobs(model, processor, prompts, gens, images[1:] + images[:1], tok.pad_token_id,
                                        False)
            assert max(float((a - b).abs().max()) for a, b in zip(engine_lp, swapped)) > 1e-2
            if step == 0:  # sync weights whose vision tower (only) moved
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if "vision_model" in name or "connector" in name:
                            p.add_(torch.randn_like(p) * 0.5)
                engine.load_weights(full_state_dict_for_engine(model))
    finally:
        engine.close()


def test_sft_batches_carry_each_rows_image(tiny_vl_dir):
    from kimi_rl.config import SFTConfig
    from kimi_rl.sft import TraceStream

    tok, processor = load_tokenizer(tiny_vl_dir), load_processor(tiny_vl_dir)
    train, _ = make_problems([1, 2], 6, 2, seed=0)
    data = DataConfig(source="vision_arithmetic", levels=[1, 2])
    batch = next(iter(TraceStream(train, tok, data, SFTConfig(tokens_per_step=400), 0, processor=processor)))
    rows = batch["input_ids"].shape[0]
    assert batch["pixel_values"].shape[:2] == (rows, 1) and batch["pixel_attention_mask"].shape[:2] == (rows, 1)
    for ids in batch["input_ids"].tolist():
        assert tok.image_layout.count(ids) == 1
        assert tok.decode(ids, skip_special_tokens=True).startswith("sum=read ")
    model = load_model(tiny_vl_dir)
    images = {k: batch[k] for k in ("pixel_values", "pixel_attention_mask")}
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **images).logits.sum()
    loss.backward()  # the vision tower trains with the decoder
    assert model.model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_a_saved_policy_is_again_a_vision_folder(tiny_vl_dir, tmp_path):
    from kimi_rl.models.vision import is_vision_folder
    from kimi_rl.rollout.weights import save_policy

    tok = load_tokenizer(tiny_vl_dir)
    save_policy(load_model(tiny_vl_dir), tok, tmp_path / "out", True)
    assert is_vision_folder(tmp_path / "out")
    assert load_tokenizer(tmp_path / "out").image_layout == tok.image_layout
    load_processor(tmp_path / "out")


def test_the_visual_task_needs_a_vision_model(tmp_path):
    from kimi_rl.config import ConfigError
    from kimi_rl.config.loader import load_config
    from kimi_rl.pipeline import prepare

    cfg = load_config(["data=vision_arithmetic", f"run.dir={tmp_path}"])
    with pytest.raises(ConfigError, match="vision_arithmetic: the questions are images; pick a vision-language"):
        prepare(cfg)


def test_freeze_vision_keeps_the_encoder_and_trains_the_rest(tiny_vl_dir):
    from kimi_rl.models.vision import freeze_vision_tower

    model = load_model(tiny_vl_dir)
    assert freeze_vision_tower(model) > 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("vision_model" in n for n in trainable)
    assert any("connector" in n for n in trainable) and "lm_head.weight" in trainable
    assert any("vision_model" in n for n in full_state_dict_for_engine(model))  # still synced to the engine


def test_sample_logger_writes_each_visual_problem_with_its_answers_to_tensorboard(tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kimi_rl.callbacks import SampleLogger
    from kimi_rl.models.tokenizer import build_char_tokenizer
    from kimi_rl.rl.iteration import Iteration
    from kimi_rl.rollout.types import Group, Trajectory
    from kimi_rl.rollout.worker import Rollouts

    tok = build_char_tokenizer()
    (vis,), _ = make_problems([1], 1, 1, 0)
    text = Problem("t", "1+1=", "2")
    groups = [Group(p.uid, p, [Trajectory(p.uid, p, [1], tok("x\n\\boxed{3}", add_special_tokens=False)["input_ids"],
                                          reward=r) for r in (1.0, 0.0)]) for p in (text, vis)]
    trainer = L.Trainer(logger=TensorBoardLogger(str(tmp_path), name="tb"), accelerator="cpu", devices=1)
    SampleLogger(tok, every=5).on_train_batch_end(trainer, None, None, Iteration(0, index=10, rollouts=Rollouts(
        None, groups, [text, vis])), 0)
    trainer.logger.experiment.flush()
    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0}).Reload()
    assert acc.Tags()["images"] == ["samples/images/1"]  # the text problem has no panel
    (event,) = acc.Images("samples/images/1")
    from PIL import Image
    panel = Image.open(io.BytesIO(event.encoded_image_string))
    assert event.step == 10 and panel.width >= 3 * 64 and panel.height > 3 * 64 + 3 * 12
    assert panel.crop((4, 4, 4 + 192, 4 + 192)).resize((64, 64), Image.NEAREST).tobytes() == \
        problem_images(vis)[0].tobytes()  # the problem's own image, enlarged 3x


def test_long2short_sft_rows_and_dpo_pairs_see_their_problems_images(tiny_vl_dir, tmp_path):
    import math

    from kimi_rl.config import Config, TrainerConfig
    from kimi_rl.long2short.data import ResponseSFTDataModule, rows_images
    from kimi_rl.long2short.dpo import collate_pairs, pair_examples, run_dpo
    from kimi_rl.long2short.methods import merge_models
    from kimi_rl.long2short.stages import run_rows_sft
    from kimi_rl.models.vision import is_vision_folder
    from tests.long2short.test_dpo import scalars

    cfg = Config()
    cfg.trainer = TrainerConfig(accelerator="cpu", threads=1)
    cfg.data = DataConfig(source="vision_arithmetic", sampler="uniform", use_chat_template=False)
    probs, _ = make_problems([1, 2], 2, 1, 0)
    by_uid = {p.uid: p for p in probs}
    rows = [{"uid": p.uid, "question": p.question, "response": make_trace(p, random.Random(0), 0, 0.0)}
            for p in probs]
    tok, proc = load_tokenizer(tiny_vl_dir), load_processor(tiny_vl_dir)
    dm = ResponseSFTDataModule(rows, tok, cfg.data, 4096, 0, by_uid, proc)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape[:2] == (4, 1)  # every row with its own image
    with pytest.raises(ValueError, match="name no known problem"):
        ResponseSFTDataModule(rows, tok, cfg.data, 4096, 0, {}, proc)
    out = run_rows_sft(tiny_vl_dir, rows, tmp_path / "srs", cfg, tmp_path, steps=2, lr=1e-3, tokens_per_step=4096,
                       problems=by_uid)
    assert is_vision_folder(out)
    merged = merge_models(tiny_vl_dir, out, tmp_path / "merged")  # long2short's merge of two vision folders
    assert is_vision_folder(merged) and (merged / "processor_config.json").is_file()
    a, b, m = (load_model(d).state_dict() for d in (tiny_vl_dir, out, merged))
    assert all(torch.allclose(m[k], (a[k] + b[k]) / 2, atol=1e-6) for k in m)

    pairs = [{"uid": p.uid, "question": p.question, "chosen": r["response"], "rejected": r["response"] + " no"}
             for p, r in zip(probs, rows)]
    b = collate_pairs(pair_examples(pairs, tok, cfg.data, rows_images(pairs, by_uid)), tok.pad_token_id, proc)
    assert b["pixel_values"].shape[:2] == (8, 1) and torch.equal(b["pixel_values"][:4], b["pixel_values"][4:])
    run_dpo(tiny_vl_dir, pairs, tmp_path / "dpo", cfg, tmp_path, beta=0.5, lr=1e-3, steps=2, pairs_per_step=4,
            problems=by_uid)
    # step 0: the policy is the reference, both scored with the same images, so the loss is exactly log 2
    assert scalars(tmp_path / "tb" / "dpo")["dpo/loss"][0] == pytest.approx(math.log(2), abs=1e-4)


def test_a_vision_run_resumes_to_the_uninterrupted_run(tmp_path):
    """The RL CLI on the visual task with the image encoder training: resumed from the uninterrupted run's
    iteration-2 checkpoint, iteration 3 and the final weights (image encoder included) are the same; the run's
    TensorBoard holds the image panels."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from kimi_rl.runs import read_scalars

    common = ["train", "model=tiny_vl", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2",
              "model.num_kv_heads=2", "model.intermediate_size=128", "model.max_position_embeddings=512",
              "model.freeze_vision=false", "data=vision_arithmetic", "data.levels=[1]", "data.train_per_level=40",
              "data.heldout_per_level=2", "sft.enabled=false", "rollout=hf", "rl.iterations=3",
              "rl.checkpoint_every=2", "rl.sample_log_every=1", "rollout.prompts_per_iteration=2",
              "rollout.samples_per_prompt=4", "rollout.max_response_tokens=48", "algo.minibatch_size=8",
              # the random model is never right; the length reward (its responses stop at random lengths) is the
              # signal that moves the weights
              "algo.len_reward_weight=1.0", "algo.len_warmup_iterations=0", "algo.reset_optimizer=false",
              "eval.samples=1",
              f"run.dir={tmp_path}", "trainer.threads=1"]
    env = {**os.environ, "KIMI_RL_CONF": str(Path(__file__).resolve().parents[2] / "conf")}

    def run(*extra):
        done = subprocess.run([sys.executable, "-m", "kimi_rl.cli", *common, *extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]

    run("run.name=straight")
    previous = tmp_path / "straight" / "checkpoints" / "previous.ckpt"
    assert torch.load(previous, weights_only=False)["kimi_rl"]["iteration"] == 2
    run("run.name=resumed", f"run.resume={previous}")
    a, b = (read_scalars(tmp_path / name / "tb" / "rl") for name in ("straight", "resumed"))
    assert sorted(b["reward/mean"]) == [2]  # iteration 3 (logged at step 2), as the straight run's
    for tag in ("reward/mean", "response/length_mean", "train/loss", "train/optimizer_state_steps"):
        assert b[tag][2] == pytest.approx(a[tag][2], abs=1e-4), tag
    wa, wb = (load_file(tmp_path / name / "final_model" / "model.safetensors") for name in ("straight", "resumed"))
    (base,) = (tmp_path / "cache").glob("*/model.safetensors")  # the built tiny model RL started from
    start = load_file(base)
    assert any("vision_model" in k and not torch.allclose(wa[k], start[k]) for k in wa)  # the encoder trained
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "straight" / "tb" / "rl"), size_guidance={"images": 0}).Reload()
    assert "samples/images/0" in acc.Tags()["images"]
