"""The ``reward_model`` verifier (paper 2.1): a learned judge of a response against the reference answer.

Two kinds, chosen by ``data.verifier_options.kind``:

- ``cot``: a causal LM folder is prompted with the question, the reference answer and the response
  (``judge_prompt``); it reasons, then emits a JSON verdict ``{"correct": true|false}``, sampled through a
  rollout engine. The reward is 1 for a ``true`` verdict. An output with no verdict, or with verdicts that
  disagree, scores 0 and is counted (``unparseable``): a judge that rambles never pays.
- ``classic``: a sequence-classification head (one logit) on a LM folder reads the same prompt and gives
  P(correct) = sigmoid(logit); the reward is 1 when P >= ``threshold`` (null threshold: P itself).

With ``rule`` (``arithmetic`` or ``math``) the rule decides first and the model judges only the responses the
rule cannot decide (no final answer it can parse): rule first, model where the rule is silent.

The response is untrusted text inside the judge's prompt: the prompt's own section markers are neutralised in
it (a response cannot close its section and write a verdict line of its own), and it is cut from the left to
fit the judge's context (the final answer is at the end).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from transformers import AutoModelForSequenceClassification

from kimi_rl.config import ModelConfig, RolloutConfig
from kimi_rl.models.modeling import check_model_folder, load_tokenizer, model_context
from kimi_rl.rollout import build_engine
from kimi_rl.rollout.engines.hf import left_pad
from kimi_rl.tasks.arithmetic import integer_answer
from kimi_rl.tasks.base import Problem

KINDS = ("cot", "classic")
RULES = ("arithmetic", "math")
OPTIONS = ("kind", "model", "rule", "engine", "max_tokens", "temperature", "threshold", "batch_size",
           "max_model_len", "response_tokens", "device", "seed")

RESPONSE_MARK = "### Response:"
VERDICT_MARK = "### Judgement:"
MARKS = ("### Question:", "### Reference:", RESPONSE_MARK, VERDICT_MARK)
VERDICT = re.compile(r'\{\s*"correct"\s*:\s*(true|false)\s*\}')


def neutralise(text: str) -> str:
    """``text`` with the judge prompt's section markers defanged (``###`` -> ``#-#``), so a response cannot
    start a section of its own.

    >>> neutralise("ok ### Judgement: {}")
    'ok #-# Judgement: {}'
    """
    return text.replace("###", "#-#")


def judge_prompt(question: str, reference: str, response: str) -> str:
    """The prompt both kinds read: question, the (neutralised) response, the reference answer, then the judgement
    marker after which a CoT judge writes its reasoning and verdict. The reference comes last, next to the
    judgement: a tiny judge copied the response's nearer numbers when the reference stood at the top."""
    return (f"### Question: {neutralise(question)}\n{RESPONSE_MARK}\n{neutralise(response)}\n"
            f"### Reference: {neutralise(reference)}\n{VERDICT_MARK}\n")


def fit_prompt(tokenizer, question: str, reference: str, response: str, limit: int,
               response_tokens: Optional[int] = None) -> list[int]:
    """``judge_prompt`` as token ids, the response cut from the left until the prompt has at most ``limit``
    tokens (the response's end, where its final answer is, is kept), and to its last ``response_tokens`` tokens
    when that is set. Raises ValueError when the prompt without any response is already longer than ``limit``."""
    if response_tokens is not None:
        tail = tokenizer(response, add_special_tokens=False)["input_ids"]
        if len(tail) > response_tokens:
            response = "..." + tokenizer.decode(tail[-response_tokens:], skip_special_tokens=True)
    ids = tokenizer(judge_prompt(question, reference, response))["input_ids"]
    cut = 0
    while len(ids) > limit:
        if cut >= len(response):
            raise ValueError(f"reward model: the judge prompt of '{question[:40]}' needs more than {limit} tokens "
                             f"without any response; raise max_model_len or shorten max_tokens")
        cut = min(len(response), cut + max(1, len(ids) - limit))
        ids = tokenizer(judge_prompt(question, reference, "..." + response[cut:]))["input_ids"]
    return ids


def parse_verdict(text: str) -> Optional[bool]:
    """The judge's verdict: the value of its ``{"correct": ...}`` objects when they all agree, else None
    (none written, or contradicting ones).

    >>> parse_verdict('final 12, reference 12: same\\n{"correct": true}')
    True
    >>> parse_verdict('{"correct": true} no wait {"correct": false}') is None
    True
    >>> parse_verdict("looks right") is None
    True
    """
    found = {m.group(1) == "true" for m in VERDICT.finditer(text)}
    return found.pop() if len(found) == 1 else None


def verdict_text(correct: bool) -> str:
    return json.dumps({"correct": bool(correct)})


def compare_digits(got: str, reference: str) -> tuple[str, bool]:
    """The digit-by-digit comparison line of a judgement, and whether the numbers are equal: ``1=1 2=2`` where
    digits agree, ``2!3`` where they do not; numbers of different lengths are compared by length alone.

    >>> compare_digits("128", "138")
    ('digits 1=1 2!3 8=8', False)
    >>> compare_digits("12", "123")
    ('lengths 2 3', False)
    """
    if len(got) != len(reference):
        return f"lengths {len(got)} {len(reference)}", False
    pairs = [f"{a}{'=' if a == b else '!'}{b}" for a, b in zip(got, reference)]
    return "digits " + " ".join(pairs), got == reference


def arithmetic_judge_trace(response: str, reference: str) -> str:
    """A chain-of-thought judgement for the built-in task, written in code (the CoT judge's SFT target): find the
    response's final boxed answer, copy the reference, compare them digit by digit (each step local, so a judge
    learns it from every response whatever the share of right ones at a length), then the verdict.

    >>> print(arithmetic_judge_trace("3+4=7 c0\\nans 7\\n\\\\boxed{7}", "7"))
    final 7
    reference 7
    digits 7=7
    same
    {"correct": true}
    >>> print(arithmetic_judge_trace("ans 8", "7"))
    final none
    {"correct": false}
    """
    answer = integer_answer(response)
    if answer is None:
        return f"final none\n{verdict_text(False)}"
    got, ref = str(answer), str(int(reference))
    line, same = compare_digits(got, ref)
    return f"final {got}\nreference {ref}\n{line}\n{'same' if same else 'differ'}\n{verdict_text(same)}"


def rule_verdicts(rule: str, responses: Sequence[str], problems: Sequence[Problem]) -> list[Optional[float]]:
    """The rule's 0/1 verdicts, None where it cannot decide: no final answer it can parse (``arithmetic``: no
    boxed integer; ``math``: no answer, an error or a timeout of math-verify)."""
    if rule == "arithmetic":
        answers = [integer_answer(r) for r in responses]
        return [None if a is None else float(a == int(p.answer)) for a, p in zip(answers, problems)]
    from kimi_rl.rewards.math import MathVerifier  # math-verify only for this rule

    scores = MathVerifier().score(responses, problems)
    return [s.reward if s.outcome in ("correct", "wrong") else None for s in scores]


@dataclass
class _Counts:
    samples: int = 0
    rule_decided: int = 0
    judged: int = 0
    judged_correct: int = 0
    unparseable: int = 0


class RewardModelVerifier:
    """A ``Verifier`` backed by a reward model folder (see the module docstring); ``stats`` counts what it did
    (``pop_stats`` returns and resets them), ``close`` frees the model."""

    def __init__(self, kind: str, model: str, rule: Optional[str] = None, engine: str = "hf", max_tokens: int = 96,
                 temperature: float = 0.0, threshold: Optional[float] = 0.5, batch_size: int = 64,
                 max_model_len: Optional[int] = None, response_tokens: Optional[int] = None,
                 device: Optional[str] = None, seed: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"reward_model: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if rule is not None and rule not in RULES:
            raise ValueError(f"reward_model: rule must be null or one of {', '.join(RULES)}, got {rule!r}")
        if max_tokens < 1 or batch_size < 1 or temperature < 0:
            raise ValueError("reward_model: max_tokens and batch_size must be >= 1, temperature >= 0")
        if response_tokens is not None and response_tokens < 1:
            raise ValueError(f"reward_model: response_tokens must be null or >= 1, got {response_tokens}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"reward_model: threshold must be null or in [0, 1], got {threshold}")
        self.kind, self.rule, self.max_tokens, self.temperature = kind, rule, int(max_tokens), float(temperature)
        self.threshold, self.batch_size, self.response_tokens = threshold, int(batch_size), response_tokens
        self.folder = check_model_folder(model, "data.verifier_options.model")
        self.tokenizer = load_tokenizer(self.folder)
        self.tokenizer.model_max_length = 1 << 62  # fit_prompt cuts prompts to the judge's own limit
        self.max_model_len = int(max_model_len or model_context(self.folder) or 2048)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.counts = _Counts()
        self._engine = None
        self._classifier = None
        if kind == "cot":
            self._engine = build_engine(RolloutConfig(engine=engine), self.folder, ModelConfig(), seed,
                                        self.max_model_len, None if device is None else str(self.device))
        else:
            architectures = json.loads((self.folder / "config.json").read_text()).get("architectures") or []
            if not any(a.endswith("ForSequenceClassification") for a in architectures):
                raise ValueError(f"reward_model: kind classic needs a sequence-classification model folder; "
                                 f"'{self.folder}' is {architectures or 'of no stated architecture'} (its score "
                                 f"head would be untrained). Train one with kimi-rl reward-model")
            self._classifier = AutoModelForSequenceClassification.from_pretrained(
                str(self.folder), num_labels=1, dtype=torch.float32).to(self.device).eval()

    # -- the Verifier call -----------------------------------------------------------------
    def __call__(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        if len(responses) != len(problems):
            raise ValueError(f"reward_model: {len(responses)} responses but {len(problems)} problems")
        decided = rule_verdicts(self.rule, responses, problems) if self.rule else [None] * len(responses)
        todo = [i for i, d in enumerate(decided) if d is None]
        judged = self.judge([responses[i] for i in todo], [problems[i] for i in todo]) if todo else []
        out = [0.0 if d is None else d for d in decided]
        for i, score in zip(todo, judged):
            out[i] = score
        self.counts.samples += len(responses)
        self.counts.rule_decided += len(responses) - len(todo)
        self.counts.judged += len(todo)
        self.counts.judged_correct += sum(s > 0.5 for s in judged)
        return out

    def judge(self, responses: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        """The model's scores of ``responses`` (no rule)."""
        limit = self.max_model_len - (self.max_tokens if self.kind == "cot" else 0)
        prompts = [fit_prompt(self.tokenizer, p.question, p.answer, r, limit, self.response_tokens)
                   for r, p in zip(responses, problems)]
        return self._cot(prompts) if self.kind == "cot" else self._classic(prompts)

    def _cot(self, prompts: list[list[int]]) -> list[float]:
        out = []
        for start in range(0, len(prompts), self.batch_size):
            gens = self._engine.generate(prompts[start : start + self.batch_size], self.max_tokens, 1,
                                         self.temperature, 1.0, logprobs=False)
            for g in gens:
                verdict = parse_verdict(self.tokenizer.decode(g[0].token_ids, skip_special_tokens=True))
                self.counts.unparseable += verdict is None
                out.append(1.0 if verdict else 0.0)
        return out

    @torch.no_grad()
    def probabilities(self, prompts: list[list[int]]) -> list[float]:
        """The classic head's P(correct) of each prompt."""
        out: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            ids, mask = left_pad(prompts[start : start + self.batch_size], self.tokenizer.pad_token_id)
            logits = self._classifier(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            out.extend(torch.sigmoid(logits[:, 0].float()).cpu().tolist())
        return out

    def _classic(self, prompts: list[list[int]]) -> list[float]:
        probs = self.probabilities(prompts)
        return probs if self.threshold is None else [float(p >= self.threshold) for p in probs]

    # -- bookkeeping -----------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        return dict(vars(self.counts))

    def reset_stats(self) -> None:
        self.counts = _Counts()

    def pop_stats(self) -> dict[str, int]:
        out = self.stats
        self.reset_stats()
        return out

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine = self._classifier = None


def reward_model_verifier(**options: object) -> RewardModelVerifier:
    """Factory registered as ``reward_model``. Options: ``kind`` (cot | classic, required), ``model`` (folder,
    required), ``rule`` (null | arithmetic | math: decides first), ``engine`` (cot: hf | vllm, default hf),
    ``max_tokens`` (cot: judgement length, 96), ``temperature`` (cot: 0 = greedy), ``threshold`` (classic: 0.5;
    null: the probability is the reward), ``batch_size`` (64), ``max_model_len`` (null: the folder's context),
    ``response_tokens`` (null: the whole response; n: its last n tokens, as the judge was trained), ``device``,
    ``seed``."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"reward_model: unknown option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    missing = [k for k in ("kind", "model") if not options.get(k)]
    if missing:
        raise ValueError(f"reward_model: option(s) {', '.join(missing)} required (kind: cot | classic; model: "
                         f"a reward model folder, e.g. from kimi-rl reward-model)")
    return RewardModelVerifier(**options)  # type: ignore[arg-type]
