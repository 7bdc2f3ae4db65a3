"""``kimi-rl reward-model`` (paper 2.1): a classic and a chain-of-thought reward model made on this machine, and
the paper's comparison of the two: agreement with the rule on held-out responses.

1. The policy (``reward_model.model``, else ``model.path``, else the run's SFT warm-up) samples responses to
   training and held-out problems; the rule verifier labels each (the truth at this scale).
2. ``classic``: the policy with a one-logit sequence-classification head, trained with binary cross-entropy on
   the judge prompt (``reward_model.judge_prompt``); it gives P(correct).
3. ``cot``: the policy fine-tuned (next-token loss) to write a judgement for the same prompt: the response's final
   answer, the reference, same / differ, then ``{"correct": true|false}`` (traces written in code, like the SFT
   warm-up's); the built-in arithmetic task only.
4. Both judge the held-out responses as ``data.verifier=reward_model`` would; the report gives agreement with the
   rule overall, on right and on wrong responses, per level, and the CoT judge's unparseable verdicts.

One process (``trainer.devices`` is ignored); everything goes under ``reward_model.out``.
"""
from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset
from transformers import AutoModelForSequenceClassification

from kimi_rl.callbacks import ProgressLog, SaveHFModel
from kimi_rl.config import Config, ConfigError, RewardModelConfig, SFTConfig
from kimi_rl.config.loader import load_config
from kimi_rl.data.prompts import encode_prompts
from kimi_rl.eval.evaluate import cap_per_level
from kimi_rl.models.modeling import check_model_folder, load_model, load_tokenizer, model_context
from kimi_rl.pipeline import base_model, close_verifier, log, prompt_limit, run_sft
from kimi_rl.rewards import make_verifier
from kimi_rl.rewards.reward_model import RewardModelVerifier, arithmetic_judge_trace, fit_prompt
from kimi_rl.rewards.scoring import sample_and_score
from kimi_rl.rollout import open_engine
from kimi_rl.runs import RunPaths, set_log_file
from kimi_rl.sft import SFTModule, bucket_batches, collate, warmup_cosine
from kimi_rl.tasks import heldout_verifier, load_task
from kimi_rl.tasks.base import Problem
from kimi_rl.trainer_factory import build_trainer, set_threads


@dataclass(frozen=True)
class Labelled:
    """One sampled response and the rule's verdict of its text."""

    problem: Problem
    response: str
    correct: bool

    def to_dict(self) -> dict:
        p = self.problem
        return {"id": p.uid, "question": p.question, "answer": p.answer, "difficulty": p.difficulty,
                "response": self.response, "correct": self.correct}


def sample_labelled(cfg: Config, opts: RewardModelConfig, policy: Path, problems: Sequence[Problem], rule,
                    what: str) -> list[Labelled]:
    """``opts.samples`` responses per problem from ``policy`` (``rollout.engine``), each labelled by ``rule``."""
    tok = load_tokenizer(policy)
    prompts = encode_prompts(problems, tok, cfg.data)
    max_tokens = cfg.rollout.max_response_tokens
    max_len = max(map(len, prompts)) + max_tokens
    context = model_context(policy)
    out: list[Labelled] = []
    with open_engine(cfg.rollout, policy, cfg.model, cfg.run.seed, min(max_len, context or max_len)) as engine:
        for start in range(0, len(problems), 128):
            for s in sample_and_score(engine, tok, problems[start : start + 128], prompts[start : start + 128],
                                      rule, opts.samples, opts.temperature, max_tokens, cfg.rollout.top_p):
                out.extend(Labelled(s.problem, t, c) for t, c in zip(s.texts, s.correct()))
            log(f"reward-model: {what} responses {len(out)} / {len(problems) * opts.samples}")
    return out


class ExampleStream(IterableDataset):
    """Endless length-bucketed batches of fixed (prompt ids, target) examples, reshuffled each epoch.

    ``target``: response ids (next-token loss on them, ``sft.collate``) or a 0/1 label (``labels`` added)."""

    def __init__(self, examples: list[tuple[list[int], list[int] | int]], pad_id: int, tokens_per_step: int,
                 seed: int) -> None:
        self.examples, self.pad_id, self.tokens_per_step, self.seed = examples, pad_id, tokens_per_step, seed

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = 0
        while True:
            rng = random.Random(f"rm-{self.seed}-{epoch}")
            lengths = [len(p) + (len(t) if isinstance(t, list) else 0) for p, t in self.examples]
            for idx in bucket_batches(lengths, self.tokens_per_step, rng):
                chosen = [self.examples[i] for i in idx]
                if isinstance(chosen[0][1], list):
                    yield collate(chosen, self.pad_id)
                else:
                    batch = collate([(p, []) for p, _ in chosen], self.pad_id)
                    batch["labels"] = torch.tensor([float(t) for _, t in chosen])  # [B]
                    yield batch
            epoch += 1


def classic_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the value head: -mean(y log sigmoid(s) + (1 - y) log(1 - sigmoid(s)))."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class ClassicRMModule(L.LightningModule):
    """A one-logit sequence-classification model trained to predict the rule's verdict."""

    def __init__(self, model, lr: float, steps: int, warmup: int) -> None:
        super().__init__()
        self.model, self.lr, self.steps, self.warmup = model.train(), lr, steps, warmup

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]  # [B]
        loss = classic_loss(logits, batch["labels"])
        self.log("rm/loss", loss, prog_bar=True)
        self.log("rm/train_agreement", ((logits > 0).float() == batch["labels"]).float().mean())
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, self.warmup, self.steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def judge_examples(kind: str, labelled: Sequence[Labelled], tok, limit: int,
                   response_tokens: int | None = None) -> list[tuple[list[int], list[int] | int]]:
    """Training examples of one kind: (judge prompt, label) for classic, (judge prompt, judgement + eos) for cot."""
    out: list[tuple[list[int], list[int] | int]] = []
    for x in labelled:
        prompt = fit_prompt(tok, x.problem.question, x.problem.answer, x.response, limit, response_tokens)
        if kind == "classic":
            out.append((prompt, int(x.correct)))
        else:
            trace = tok(arithmetic_judge_trace(x.response, x.problem.answer), add_special_tokens=False)["input_ids"]
            out.append((prompt, trace + [tok.eos_token_id]))
    return out


def train_one(cfg: Config, opts: RewardModelConfig, kind: str, policy: Path, labelled: Sequence[Labelled],
              out: Path) -> Path:
    """Train the ``kind`` reward model from ``policy`` on ``labelled``; its HF folder is ``out/kind``."""
    tok = load_tokenizer(policy)
    tok.model_max_length = 1 << 62
    context = model_context(policy) or 2048
    limit = context - (opts.judge_max_tokens if kind == "cot" else 0)
    examples = judge_examples(kind, labelled, tok, limit, opts.judge_response_tokens)
    warmup = max(1, opts.steps // 10)
    if kind == "classic":
        model = AutoModelForSequenceClassification.from_pretrained(str(policy), num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tok.pad_token_id
        module: L.LightningModule = ClassicRMModule(model, opts.lr, opts.steps, warmup)
    else:
        sft = SFTConfig(max_steps=opts.steps, tokens_per_step=opts.tokens_per_step, lr=opts.lr, warmup_steps=warmup)
        module = SFTModule(load_model(policy, "float32"), sft)
    stream = ExampleStream(examples, tok.pad_token_id, opts.tokens_per_step, cfg.run.seed)
    folder = out / kind
    single = dataclasses.replace(cfg.trainer, devices=1, num_nodes=1, strategy="auto")
    progress = ProgressLog(f"reward model {kind}: step", opts.steps,
                           {"loss": "rm/loss" if kind == "classic" else "sft/loss"}, every=10)
    trainer = build_trainer(single, out, f"rm_{kind}", opts.steps, [SaveHFModel(folder, tok), progress],
                            log_every_n_steps=10)
    log(f"reward-model: training {kind} on {len(examples)} responses ({sum(x.correct for x in labelled)} right), "
        f"{opts.steps} steps -> {folder}")
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(stream, batch_size=None, num_workers=0))
    log(f"reward-model: {kind} trained in {time.perf_counter() - t0:.0f} s")
    return folder


def agreement(labels: Sequence[bool], verdicts: Sequence[float], levels: Sequence[int]) -> dict:
    """Agreement of a judge's verdicts (correct: > 0.5) with the rule's labels: overall, on right responses
    (true-positive rate), on wrong ones (true-negative rate) and per level; ``majority`` is what always answering
    the commoner label would score.

    >>> agreement([True, True, False, False], [1.0, 0.0, 0.0, 0.0], [1, 1, 2, 2])["agreement"]
    0.75
    """
    said = [v > 0.5 for v in verdicts]
    agree = [s == y for s, y in zip(said, labels)]
    right = [a for a, y in zip(agree, labels) if y]
    wrong = [a for a, y in zip(agree, labels) if not y]
    n = max(len(labels), 1)
    per_level = {}
    for lv in sorted(set(levels)):
        mine = [a for a, level in zip(agree, levels) if level == lv]
        per_level[str(lv)] = {"responses": len(mine), "agreement": sum(mine) / max(len(mine), 1)}
    return {"responses": len(labels), "agreement": sum(agree) / n,
            "on_right": sum(right) / max(len(right), 1), "on_wrong": sum(wrong) / max(len(wrong), 1),
            "majority": max(sum(labels), len(labels) - sum(labels)) / n, "per_level": per_level}


def judge_heldout(kind: str, folder: Path, labelled: Sequence[Labelled], opts: RewardModelConfig, seed: int) -> dict:
    """The trained judge on the held-out responses, as ``data.verifier=reward_model`` runs it (no rule)."""
    judge = RewardModelVerifier(kind, str(folder), max_tokens=opts.judge_max_tokens,
                                response_tokens=opts.judge_response_tokens, seed=seed)
    try:
        t0 = time.perf_counter()
        verdicts = judge.judge([x.response for x in labelled], [x.problem for x in labelled])
        seconds = time.perf_counter() - t0
        unparseable = judge.counts.unparseable
    finally:
        judge.close()
    out = agreement([x.correct for x in labelled], verdicts, [x.problem.difficulty for x in labelled])
    return {**out, "unparseable": unparseable, "judge_seconds": seconds}


def policy_folder(cfg: Config, opts: RewardModelConfig, paths: RunPaths, task) -> Path:
    if opts.model:
        return check_model_folder(opts.model, "reward_model.model")
    return run_sft(cfg, paths, task, base_model(cfg, paths))  # model.path when SFT is off; cached warm-up


def format_report(report: dict) -> str:
    rows = ["| judge | agreement | on right | on wrong | unparseable | judge s |", "|---|---|---|---|---|---|"]
    for kind, r in report["judges"].items():
        rows.append(f"| {kind} | {r['agreement']:.1%} | {r['on_right']:.1%} | {r['on_wrong']:.1%} | "
                    f"{r['unparseable']} | {r['judge_seconds']:.0f} |")
    rows.append(f"\n{report['heldout_responses']} held-out responses, {report['heldout_right']} right by the rule "
                f"({report['rule']}); always answering the commoner label agrees on "
                f"{report['majority_agreement']:.1%}.")
    return "\n".join(rows)


def run_reward_model(overrides: Sequence[str]) -> int:
    cfg = load_config(list(overrides))
    opts = cfg.reward_model
    rule_name, rule_options = heldout_verifier(cfg.data, cfg.eval.verifier)
    if "cot" in opts.kinds and rule_name != "arithmetic":
        raise ConfigError(f"reward_model.kinds: the cot judge's traces are written for the built-in arithmetic task "
                          f"(rule 'arithmetic'), not '{rule_name}'; use reward_model.kinds=[classic]")
    set_threads(cfg.trainer)
    paths = RunPaths(cfg.run.dir, cfg.run.name)
    out = Path(opts.out) if opts.out else paths.root / "reward_models"
    set_log_file(paths.log)
    task = load_task(cfg.data, cfg.run.seed, prompt_limit(cfg))
    policy = policy_folder(cfg, opts, paths, task)
    L.seed_everything(cfg.run.seed, verbose=False)
    rule = make_verifier(rule_name, rule_options)
    try:
        train = sample_labelled(cfg, opts, policy, cap_per_level(task.train, opts.train_problems_per_level), rule,
                                "training")
        heldout = sample_labelled(cfg, opts, policy, cap_per_level(task.heldout, cfg.eval.max_problems_per_level),
                                  rule, "held-out")
    finally:
        close_verifier(rule)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("heldout", heldout)):
        (out / f"responses_{name}.jsonl").write_text("".join(json.dumps(x.to_dict()) + "\n" for x in rows))
    judges = {}
    for kind in opts.kinds:
        folder = train_one(cfg, opts, kind, policy, train, out)
        judges[kind] = {"model": str(folder), **judge_heldout(kind, folder, heldout, opts, cfg.run.seed)}
    labels = [x.correct for x in heldout]
    report = {"policy": str(policy), "rule": rule_name, "settings": dataclasses.asdict(opts), "train_responses": len(train),
              "train_right": sum(x.correct for x in train), "heldout_responses": len(heldout),
              "heldout_right": sum(labels),
              "majority_agreement": max(sum(labels), len(labels) - sum(labels)) / max(len(labels), 1),
              "judges": judges}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(format_report(report) + "\n")
    log("reward models against the rule on held-out responses (paper 2.1: classic 84.4%, CoT 98.5%):\n"
        + format_report(report))
    tail = "" if opts.judge_response_tokens is None else f", response_tokens: {opts.judge_response_tokens}"
    log(f"report: {out / 'report.json'}; use one as the reward: data.verifier=reward_model "
        f"data.verifier_options='{{kind: cot, model: {out / 'cot'}{tail}}}'")
    return 0
