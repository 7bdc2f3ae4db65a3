"""Partial-rollout buffer (src/rollout/buffer.py): segments, finish reasons, group release, state round trip."""
from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch

from kimi_rl.rollout.buffer import Request, RolloutBuffer, release_stats
from kimi_rl.rollout.packing import pack_groups
from kimi_rl.rollout.repetition import RepeatDetector
from kimi_rl.rollout.types import Generation
from kimi_rl.tasks.base import Problem

EOS = 0


class ScriptedEngine:
    """A deterministic stand-in policy: sample j of a prompt always writes ``scripts[prompt][j]``.

    Token ids and log-probs depend only on (sample, position), never on how the response was split
    into calls, so a segmented rollout must reproduce an uninterrupted one exactly. The sample of a
    continued context is recognised by the tokens it already holds (scripts differ in token one).
    """

    def __init__(self, scripts: dict[tuple[int, ...], list[list[int]]]) -> None:
        self.scripts = scripts
        self.started = {p: 0 for p in scripts}
        self.calls: list[tuple[list[int], int]] = []
        self.asked: list[tuple[int, bool]] = []
        """Each call's (requests, ``logprobs``)."""

    @staticmethod
    def logprob(sample: int, position: int) -> float:
        return -(position + 1) / 8 - sample / 64

    def generate(self, prompts: list[list[int]], max_new_tokens: list[int], n: int, temperature: float,
                 top_p: float, logprobs: bool = True) -> list[list[Generation]]:
        assert n == 1
        out = []
        self.asked.append((len(prompts), logprobs))
        for context, budget in zip(prompts, max_new_tokens):
            self.calls.append((list(context), budget))
            prompt = next(p for p in self.scripts if tuple(context[:len(p)]) == p)
            done = context[len(prompt):]
            if not done:
                j, self.started[prompt] = self.started[prompt], self.started[prompt] + 1
            else:
                j = next(j for j, s in enumerate(self.scripts[prompt]) if s[:len(done)] == done)
            new = self.scripts[prompt][j][len(done):len(done) + budget]
            lps = [self.logprob(j, len(done) + i) if logprobs else math.nan for i in range(len(new))]
            out.append([Generation(new, lps, "stop" if new and new[-1] == EOS else "length")])
        return out


def problem(uid: str, **meta: Any) -> Problem:
    return Problem(uid=uid, question=f"q {uid}", answer="1", difficulty=2, meta=meta)


def run(buffer: RolloutBuffer, engine: ScriptedEngine, iteration: int, segment: int | None,
        max_tokens: int = 20, repeat: RepeatDetector | None = None):
    return buffer.generate(engine, iteration, segment, max_tokens, temperature=1.0, top_p=1.0, eos_ids=[EOS],
                           repeat=repeat)


SCRIPTS = {(101, 102): [[11, 12, 13, 14, 15, 16, 17, 18, 19, EOS], [21, 22, 23, 24, 25, 26, EOS]]}


def test_three_segments_keep_the_bookkeeping_of_one_generation() -> None:
    whole, split = RolloutBuffer(), RolloutBuffer()
    for buffer in (whole, split):
        buffer.add_groups([problem("a")], [[101, 102]], k=2, iteration=0)
    run(whole, ScriptedEngine(SCRIPTS), iteration=0, segment=None)
    engine = ScriptedEngine(SCRIPTS)
    for iteration in range(3):
        assert split.pop_finished_groups() == []
        run(split, engine, iteration, segment=4)
    # Iteration 1 continued each sample from its own tokens: prompt + 4 generated, budget 4.
    assert engine.calls[2] == ([101, 102, 11, 12, 13, 14], 4)
    assert engine.calls[3] == ([101, 102, 21, 22, 23, 24], 4)
    assert engine.calls[4] == ([101, 102, 11, 12, 13, 14, 15, 16, 17, 18], 4)  # sample 1 had stopped
    (a,), (b,) = whole.pop_finished_groups(), split.pop_finished_groups()
    for ta, tb in zip(a.trajectories, b.trajectories):
        assert (ta.response_ids, ta.logprobs, ta.finish_reason) == (tb.response_ids, tb.logprobs, "stop")
    assert b.trajectories[0].versions == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert b.trajectories[1].versions == [0, 0, 0, 0, 1, 1, 1]
    assert [t.segments for t in b.trajectories] == [3, 2]
    assert a.trajectories[0].versions == [0] * 10
    pa = pack_groups([a], pad_id=0, current_iteration=2, loss_on_old_segments=True)
    pb = pack_groups([b], pad_id=0, current_iteration=2, loss_on_old_segments=True)
    for name in ("input_ids", "attention_mask", "loss_mask", "logp_old", "rewards", "response_lengths"):
        assert torch.equal(getattr(pa, name), getattr(pb, name)), name
    assert pb.versions[0, 2:].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert pb.logp_old[1, 2:9].tolist() == pytest.approx([ScriptedEngine.logprob(1, i) for i in range(7)])


def test_a_rollout_without_logprobs_keeps_them_as_nan() -> None:
    buffer, engine = RolloutBuffer(), ScriptedEngine({**SCRIPTS, (103,): [[31, EOS], [32, 33, EOS]]})
    buffer.add_groups([problem("a"), problem("b")], [[101, 102], [103]], k=2, iteration=0)
    buffer.generate(engine, 0, 4, 20, 1.0, 1.0, [EOS], logprobs=False)
    buffer.generate(engine, 1, 4, 20, 1.0, 1.0, [EOS])  # the next segment asks again
    assert engine.asked == [(4, False), (2, True)]  # group b finished in the first segment
    (b,) = buffer.pop_finished_groups()
    assert all(math.isnan(x) for t in b.trajectories for x in t.logprobs)
    buffer.generate(engine, 2, 4, 20, 1.0, 1.0, [EOS])
    (a,) = buffer.pop_finished_groups()
    first = a.trajectories[0]
    assert all(math.isnan(x) for x in first.logprobs[:4])
    assert first.logprobs[4:] == [ScriptedEngine.logprob(0, i) for i in range(4, 10)]
    packed = pack_groups([a], pad_id=0, current_iteration=2, loss_on_old_segments=True)
    assert torch.isnan(packed.logp_old).sum() == 8 and torch.isfinite(packed.logp_old[:, 6:]).all()


def test_a_group_is_released_only_when_all_k_finished() -> None:
    buffer, engine = RolloutBuffer(), ScriptedEngine({**SCRIPTS, (103,): [[31, EOS], [32, EOS]]})
    buffer.add_groups([problem("a")], [[101, 102]], k=2, iteration=0)
    run(buffer, engine, 0, segment=4)
    buffer.add_groups([problem("b")], [[103]], k=2, iteration=1)
    result = run(buffer, engine, 1, segment=4)
    assert result.finished == {"stop": 3, "length": 0, "repeat": 0} and result.new_tokens == 4 + 3 + 2 + 2
    # Group b (drawn later) finished, group a has one sample left: only b is released.
    assert [g.group_id for g in buffer.pop_finished_groups()] == ["b@1"]
    assert buffer.stats(iteration=1) == {"buffer_groups": 1.0, "buffer_unfinished": 1.0,
                                         "buffer_finished_waiting": 1.0, "buffer_response_tokens": 15.0,
                                         "buffer_oldest_age": 1.0}
    assert [t.response_ids[:1] for t in buffer.pending()] == [[11]]
    run(buffer, engine, 2, segment=4)
    (a,) = buffer.pop_finished_groups()
    assert a.group_id == "a@0" and len(buffer) == 0 and buffer.pending() == []
    assert release_stats([a]) == {"release_groups": 1.0, "release_segments_mean": 2.5,
                                  "release_response_tokens_mean": 8.5, "release_finish_stop": 1.0,
                                  "release_finish_length": 0.0, "release_finish_repeat": 0.0}


def test_the_response_limit_cuts_with_finish_reason_length() -> None:
    buffer, engine = RolloutBuffer(), ScriptedEngine({(101,): [list(range(1, 31))]})
    buffer.add_groups([problem("a")], [[101]], k=1, iteration=0)
    for iteration in range(2):
        run(buffer, engine, iteration, segment=4, max_tokens=10)
        assert buffer.pending()  # the engine's segment "length" is not final
    assert run(buffer, engine, 2, segment=4, max_tokens=10).finished["length"] == 1
    assert engine.calls[-1][1] == 2  # only 10 - 8 tokens asked for
    (g,) = buffer.pop_finished_groups()
    assert g.trajectories[0].response_ids == list(range(1, 11)) and g.trajectories[0].finish_reason == "length"


def test_a_repeat_is_cut_where_it_is_detected_even_in_a_later_segment() -> None:
    script = [5, 1, 2, 1, 2, 1, 2, 1, 2, 9, EOS]
    buffer, engine = RolloutBuffer(), ScriptedEngine({(101,): [script]})
    buffer.add_groups([problem("a")], [[101]], k=1, iteration=3)
    repeat = RepeatDetector(ngram=2, count=3, window=6)
    run(buffer, engine, 3, segment=4, repeat=repeat)  # [5, 1, 2, 1]: (1, 2) twice so far
    assert run(buffer, engine, 4, segment=4, repeat=repeat).finished["repeat"] == 1
    (t,) = buffer.pop_finished_groups()[0].trajectories
    # (1, 2) copies start at 1, 3, 5: cut at 7, the 8th token and its log-prob and version dropped.
    assert t.response_ids == [5, 1, 2, 1, 2, 1, 2] and t.finish_reason == "repeat"
    assert t.versions == [3, 3, 3, 3, 4, 4, 4]
    assert t.logprobs == [ScriptedEngine.logprob(0, i) for i in range(7)]


def test_apply_cuts_after_eos_and_ends_on_exhausted_context() -> None:
    buffer = RolloutBuffer()
    buffer.add_groups([problem("a")], [[101]], k=3, iteration=0)
    reqs = buffer.requests(segment_tokens=4, max_response_tokens=50)
    assert [(r.prompt_ids, r.max_new_tokens, r.max_response_tokens) for r in reqs] == [([101], 4, 50)] * 3
    gens = [Generation([7, EOS, 3, 3], [-1.0, -2.0, -3.0, -4.0], "length"),  # eos then padding (HF-like)
            Generation([7, 8], [-1.0, -2.0], "length"),  # engine ran out of context before the budget
            Generation([7, 8, 9, 10], [-1.0, -2.0, -3.0, -4.0], "length")]  # segment budget: continues
    result = buffer.apply(reqs, gens, 0, eos_ids={EOS})
    assert result.finished == {"stop": 1, "length": 1, "repeat": 0} and result.new_tokens == 2 + 2 + 4
    first, second, third = buffer.groups[0].trajectories
    assert (first.response_ids, first.logprobs, first.finish_reason) == ([7, EOS], [-1.0, -2.0], "stop")
    assert second.finish_reason == "length" and third.finish_reason is None


def test_apply_rejects_bad_generations_and_stale_requests() -> None:
    buffer = RolloutBuffer()
    buffer.add_groups([problem("a")], [[101]], k=1, iteration=0)
    (req,) = buffer.requests(segment_tokens=2, max_response_tokens=50)
    with pytest.raises(ValueError, match="over the request's max_new_tokens=2"):
        buffer.apply([req], [Generation([1, 2, 3], [0.0] * 3, "length")], 0, [EOS])
    with pytest.raises(ValueError, match="2 tokens but 1 logprobs"):
        buffer.apply([req], [Generation([1, 2], [0.0], "length")], 0, [EOS])
    with pytest.raises(ValueError, match="finish_reason 'abort'"):
        buffer.apply([req], [Generation([1], [0.0], "abort")], 0, [EOS])
    with pytest.raises(ValueError, match="1 requests but 0 generations"):
        buffer.apply([req], [], 0, [EOS])
    buffer.apply([req], [Generation([1, EOS], [0.0, 0.0], "stop")], 0, [EOS])
    with pytest.raises(ValueError, match="stale request"):
        buffer.apply([req], [Generation([1], [0.0], "length")], 0, [EOS])


def test_group_ids_stay_unique_when_a_problem_is_drawn_twice() -> None:
    buffer = RolloutBuffer()
    buffer.add_groups([problem("p"), problem("p")], [[1], [1]], k=1, iteration=0)
    buffer.add_groups([problem("p")], [[1]], k=1, iteration=1)
    assert [g.group_id for g in buffer.groups] == ["p@0", "p@0#2", "p@1"]
    assert [t.group_id for t in buffer.pending()] == ["p@0", "p@0#2", "p@1"]
    with pytest.raises(ValueError, match="2 problems but 1 prompt_ids"):
        buffer.add_groups([problem("p"), problem("q")], [[1]], k=1, iteration=2)


def test_a_shrunk_response_limit_finishes_longer_buffered_trajectories() -> None:
    buffer = RolloutBuffer()
    buffer.add_groups([problem("a")], [[101]], k=2, iteration=0)
    reqs = buffer.requests(segment_tokens=6, max_response_tokens=50)
    buffer.apply(reqs[:1], [Generation([1] * 6, [-0.5] * 6, "length")], 0, [EOS])  # sample 1 got nothing yet
    (req,) = buffer.requests(segment_tokens=6, max_response_tokens=4)  # e.g. long2short RL after resume
    assert req.trajectory is buffer.groups[0].trajectories[1] and req.max_new_tokens == 4
    long = buffer.groups[0].trajectories[0]
    assert (long.response_ids, long.versions, long.finish_reason) == ([1] * 4, [0] * 4, "length")


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


@pytest.mark.parametrize("weights_only", [True, False])
def test_state_round_trips_through_a_checkpoint_file(weights_only: bool) -> None:
    engine_a = ScriptedEngine({**SCRIPTS, (103,): [[31, EOS], [32, 33, 34, 35, 36, EOS]]})
    buffer = RolloutBuffer()
    meta = {"tests": [{"input": "1 2", "output": "3"}], "limit_s": 2.5, "tags": ["x"], "source": None}
    buffer.add_groups([problem("a", **meta), problem("b")], [[101, 102], [103]], k=2, iteration=0)
    run(buffer, engine_a, 0, segment=4)
    buffer.groups[1].trajectories[0].reward, buffer.groups[1].trajectories[0].correct = 0.75, True
    state = buffer.state_dict()
    assert _plain(state)
    blob = io.BytesIO()
    torch.save({"callbacks": {"PartialRollout": state}, "state_dict": {"w": torch.zeros(2)}}, blob)
    blob.seek(0)
    loaded = torch.load(blob, weights_only=weights_only)["callbacks"]["PartialRollout"]
    restored = RolloutBuffer()
    restored.load_state_dict(loaded)
    assert restored.state_dict() == state
    assert restored.groups[0].problem == problem("a") and dict(restored.groups[0].problem.meta) == meta
    assert restored.groups[0].trajectories[0].problem is restored.groups[0].problem
    assert restored.stats(iteration=1) == buffer.stats(iteration=1)
    # Both continue identically: same engine state on both sides (scripts are chosen by tokens held).
    engine_b = ScriptedEngine(engine_a.scripts)
    for buf, eng in ((buffer, engine_a), (restored, engine_b)):
        run(buf, eng, 1, segment=4)
        run(buf, eng, 2, segment=4)
    assert restored.state_dict() == buffer.state_dict() and restored.pending() == []


def test_load_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="format 7"):
        RolloutBuffer().load_state_dict({"format": 7, "groups": []})


def test_requests_is_a_dataclass_with_the_trajectory_itself() -> None:
    buffer = RolloutBuffer()
    (group,) = buffer.add_groups([problem("a")], [[5, 6]], k=1, iteration=0)
    (req,) = buffer.requests(None, 9)
    assert isinstance(req, Request) and req.trajectory is group.trajectories[0] and req.max_new_tokens == 9
