"""Score finished groups: verifier correctness + weighted length reward + repeat penalty.

reward_i = r_i + w * len_reward_i (+ repeat_penalty when stopped for repeating), where r_i in
{0, 1} is the verifier's verdict; a response cut at the length limit is wrong (paper 2.6.2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from kimi_rl.rewards.length import len_reward
from kimi_rl.rollout.types import Generation, Group
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.vision import image_kwargs


@dataclass
class ScoreStats:
    samples: int = 0
    correct: int = 0
    verifier_errors: int = 0
    """Samples whose verifier raised; they get reward 0 and the run goes on."""
    all_correct_groups: int = 0
    all_wrong_groups: int = 0
    group_success: list[float] = field(default_factory=list)
    """Per group, the share of correct samples (feeds the prioritized sampler)."""


def _verify(verifier, texts: list[str], problems: list, stats: ScoreStats) -> list[float]:
    try:
        return [float(s) for s in verifier(texts, problems)]
    except Exception:
        out = []
        for t, p in zip(texts, problems):  # find the culprit(s), score the rest
            try:
                out.append(float(verifier([t], [p])[0]))
            except Exception:
                stats.verifier_errors += 1
                out.append(0.0)
        return out


def score_groups(groups: Sequence[Group], verifier, tokenizer, len_weight: float,
                 repeat_penalty: float) -> ScoreStats:
    """Set ``correct`` and ``reward`` on every trajectory of ``groups``; return counts."""
    stats = ScoreStats()
    trajs = [t for g in groups for t in g.trajectories]
    texts = [decode(tokenizer, t.response_ids) for t in trajs]
    verdicts = _verify(verifier, texts, [t.problem for t in trajs], stats)
    for t, v in zip(trajs, verdicts):
        t.correct = v > 0.5 and t.finish_reason != "length"
    for g in groups:
        correct = [t.correct for t in g.trajectories]
        lens = [len(t.response_ids) for t in g.trajectories]
        bonus = len_reward(lens, correct) if len_weight else [0.0] * len(lens)
        for t, b in zip(g.trajectories, bonus):
            t.reward = float(t.correct) + len_weight * b
            if t.finish_reason == "repeat":
                t.reward += repeat_penalty
        share = sum(correct) / len(correct)
        stats.group_success.append(share)
        stats.all_correct_groups += share == 1.0
        stats.all_wrong_groups += share == 0.0
        stats.samples += len(correct)
        stats.correct += sum(correct)
    return stats


def decode(tokenizer, token_ids: Sequence[int]) -> str:
    """A response's text as the verifier sees it (special tokens such as eos dropped)."""
    return tokenizer.decode(token_ids, skip_special_tokens=True)


@dataclass
class ScoredSamples:
    """One problem's samples from ``sample_and_score``: the engine's generations, their texts, the verdicts."""

    problem: Problem
    generations: list[Generation]
    texts: list[str]
    scores: list[float]
    """The verifier's verdict of each text (correct: > 0.5)."""

    def correct(self, cut_is_wrong: bool = False) -> list[bool]:
        """Each sample's correctness; with ``cut_is_wrong`` a response cut at the token budget is wrong, as in RL
        (its final answer was never written)."""
        return [s > 0.5 and not (cut_is_wrong and g.finish_reason == "length")
                for s, g in zip(self.scores, self.generations)]

    @property
    def lengths(self) -> list[int]:
        """Sampled tokens of each response (eos included)."""
        return [len(g.token_ids) for g in self.generations]


def sample_and_score(engine, tokenizer, problems: Sequence[Problem], prompts: list[list[int]], verifier,
                     samples: int, temperature: float, max_tokens: int, top_p: float = 1.0) -> list[ScoredSamples]:
    """``samples`` responses per problem from ``engine`` (one call), decoded and verified in one verifier call.

    The one sample -> decode -> verify path of held-out evaluation, ``kimi-rl eval``, ``difficulty``, ``curate``
    and long2short's rejection sampling; RL rollouts go through the partial-rollout buffer, then ``score_groups``.
    """
    gens = engine.generate(prompts, max_tokens, samples, temperature, top_p, **image_kwargs(problems),
                           logprobs=False)  # nothing here reads them
    texts = [[decode(tokenizer, g.token_ids) for g in gs] for gs in gens]
    flat = verifier([t for ts in texts for t in ts], [p for p, ts in zip(problems, texts) for _ in ts])
    out, pos = [], 0
    for p, gs, ts in zip(problems, gens, texts):
        out.append(ScoredSamples(p, list(gs), ts, [float(s) for s in flat[pos : pos + len(ts)]]))
        pos += len(ts)
    return out
