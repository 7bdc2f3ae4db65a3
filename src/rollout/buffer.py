"""The partial-rollout replay buffer (paper section 2.6.2): groups of k trajectories generated in segments.

As in the paper, unfinished trajectories continue next iteration under the new policy, each token keeps the
iteration that sampled it, and a group is released once all k finished. Ours also stops repeating trajectories.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Collection, Optional

from kimi_rl.rollout.repetition import RepeatDetector
from kimi_rl.rollout.types import FINISH_REASONS, Engine, Generation, Group, Trajectory
from kimi_rl.tasks.base import Problem
from kimi_rl.tasks.vision import image_kwargs

_STATE_FORMAT = 1


@dataclass
class Request:
    """One engine call for one trajectory: continue ``prompt_ids`` by at most ``max_new_tokens``."""

    trajectory: Trajectory
    """The buffered trajectory this call extends (``apply`` mutates it)."""
    prompt_ids: list[int]
    """Prompt + the response generated so far."""
    max_new_tokens: int
    """``min(segment_tokens or inf, max_response_tokens - len(response))``, >= 1."""
    max_response_tokens: int
    """The total response limit the trajectory is cut at (finish reason ``length``)."""


@dataclass
class ApplyResult:
    """What one round of ``apply`` did."""

    new_tokens: int
    """Response tokens kept (after eos and repeat cuts)."""
    finished: dict[str, int]
    """Trajectories that finished in this round, by finish reason."""


class RolloutBuffer:
    """Groups of trajectories across iterations; the rollout callback's only state.

    One iteration::

        buffer.add_groups(problems, prompt_ids, k, iteration)
        buffer.generate(engine, iteration, segment_tokens, max_response_tokens, temperature, top_p,
                        eos_ids, repeat)            # = requests() -> engine.generate(n=1) -> apply()
        groups = buffer.pop_finished_groups()       # score these, pack them, train on them
    """

    def __init__(self) -> None:
        self._groups: dict[str, Group] = {}  # insertion order = draw order
        self._drawn_at: dict[str, int] = {}  # group_id -> iteration its prompt was drawn

    def __len__(self) -> int:
        """Groups held (finished or not)."""
        return len(self._groups)

    @property
    def groups(self) -> list[Group]:
        return list(self._groups.values())

    def add_groups(self, problems: list[Problem], prompt_ids: list[list[int]], k: int,
                   iteration: int) -> list[Group]:
        """Start one group of ``k`` empty trajectories per problem; returns the new groups.

        ``group_id = f"{problem.uid}@{iteration}"``; a problem drawn twice in one iteration gets
        ``#2``, ``#3``, ... appended so ids stay unique.
        """
        if len(problems) != len(prompt_ids):
            raise ValueError(f"add_groups: {len(problems)} problems but {len(prompt_ids)} prompt_ids")
        if k < 1:
            raise ValueError(f"add_groups: k (rollout.samples_per_prompt) must be >= 1, got {k}")
        added = []
        for problem, ids in zip(problems, prompt_ids):
            group_id = self._unique_id(f"{problem.uid}@{iteration}")
            trajectories = [Trajectory(group_id=group_id, problem=problem, prompt_ids=list(ids))
                            for _ in range(k)]
            group = Group(group_id=group_id, problem=problem, trajectories=trajectories)
            self._groups[group_id] = group
            self._drawn_at[group_id] = iteration
            added.append(group)
        return added

    def _unique_id(self, base: str) -> str:
        group_id, n = base, 1
        while group_id in self._groups:
            n += 1
            group_id = f"{base}#{n}"
        return group_id

    def pending(self) -> list[Trajectory]:
        """Unfinished trajectories, oldest group first, then by sample index."""
        return [t for g in self._groups.values() for t in g.trajectories if not t.finished]

    def requests(self, segment_tokens: Optional[int], max_response_tokens: int) -> list[Request]:
        """One request per pending trajectory, in ``pending()`` order.

        A pending trajectory already at ``max_response_tokens`` (the limit shrank since it was
        buffered, e.g. a long2short phase) is cut there and finished as ``length`` instead.
        """
        if max_response_tokens < 1 or (segment_tokens is not None and segment_tokens < 1):
            raise ValueError(f"requests: max_response_tokens ({max_response_tokens}) and segment_tokens "
                             f"({segment_tokens}) must be >= 1")
        budget = math.inf if segment_tokens is None else segment_tokens
        out = []
        for t in self.pending():
            room = max_response_tokens - len(t.response_ids)
            if room <= 0:
                _cut(t, max_response_tokens, "length")
                continue
            out.append(Request(trajectory=t, prompt_ids=t.prompt_ids + t.response_ids,
                               max_new_tokens=int(min(budget, room)), max_response_tokens=max_response_tokens))
        return out

    def apply(self, requests: list[Request], generations: list[Generation], iteration: int,
              eos_ids: Collection[int], repeat: Optional[RepeatDetector] = None) -> ApplyResult:
        """Append each generation to its request's trajectory and decide whether it finished.

        New tokens get ``versions = iteration`` and their engine log-probs as logp_old. Tokens after
        the first eos id are dropped. Finish reason, first that applies: ``repeat`` (``repeat``
        caught it: cut at the detected length, dropping later tokens with their log-probs and
        versions), ``stop`` (the engine stopped or an eos id came), ``length`` (the response reached
        ``max_response_tokens``, or the engine ran out of context before the segment budget).
        Otherwise the trajectory stays pending: the engine's ``length`` for a segment is not final.
        """
        if len(requests) != len(generations):
            raise ValueError(f"apply: {len(requests)} requests but {len(generations)} generations")
        eos = set(eos_ids)
        finished = {reason: 0 for reason in FINISH_REASONS}
        new_tokens = 0
        for req, gen in zip(requests, generations):
            reason, kept = self._extend(req, gen, iteration, eos, repeat)
            new_tokens += kept
            if reason is not None:
                finished[reason] += 1
        return ApplyResult(new_tokens=new_tokens, finished=finished)

    def _extend(self, req: Request, gen: Generation, iteration: int, eos: set[int],
                repeat: Optional[RepeatDetector]) -> tuple[Optional[str], int]:
        t = req.trajectory
        where = f"trajectory of group {t.group_id}"
        group = self._groups.get(t.group_id)
        if t.finished or group is None or not any(x is t for x in group.trajectories):
            raise ValueError(f"apply: {where} is finished or no longer in the buffer (stale request)")
        if gen.finish_reason not in ("stop", "length"):
            raise ValueError(f"apply: {where}: engine finish_reason '{gen.finish_reason}' is not stop or "
                             "length")
        if len(gen.token_ids) != len(gen.logprobs):
            raise ValueError(f"apply: {where}: {len(gen.token_ids)} tokens but {len(gen.logprobs)} logprobs")
        if len(gen.token_ids) > req.max_new_tokens:
            raise ValueError(f"apply: {where}: engine returned {len(gen.token_ids)} tokens, over the "
                             f"request's max_new_tokens={req.max_new_tokens}")
        stop_at = next((i + 1 for i, tok in enumerate(gen.token_ids) if tok in eos), None)
        n = len(gen.token_ids) if stop_at is None else stop_at
        before = len(t.response_ids)
        t.response_ids.extend(int(x) for x in gen.token_ids[:n])
        t.logprobs.extend(float(x) for x in gen.logprobs[:n])
        t.versions.extend([iteration] * n)
        cut = repeat.find(t.response_ids, start=before) if repeat is not None else None
        if cut is not None:
            _cut(t, cut, "repeat")
        elif stop_at is not None or gen.finish_reason == "stop":
            t.finish_reason = "stop"
        elif len(t.response_ids) >= req.max_response_tokens or n < req.max_new_tokens:
            t.finish_reason = "length"
        return t.finish_reason, len(t.response_ids) - before

    def generate(self, engine: Engine, iteration: int, segment_tokens: Optional[int], max_response_tokens: int,
                 temperature: float, top_p: float, eos_ids: Collection[int],
                 repeat: Optional[RepeatDetector] = None, logprobs: bool = True) -> ApplyResult:
        """One segment for every pending trajectory: ``requests`` -> ``engine.generate(n=1)`` -> ``apply``.

        ``logprobs`` False: the engine is not asked for the sampled tokens' log-probs (they are kept as NaN)."""
        reqs = self.requests(segment_tokens, max_response_tokens)
        if not reqs:
            return ApplyResult(new_tokens=0, finished={reason: 0 for reason in FINISH_REASONS})
        problems = [self._groups[r.trajectory.group_id].problem for r in reqs]
        outputs = engine.generate([r.prompt_ids for r in reqs], [r.max_new_tokens for r in reqs], n=1,
                                  temperature=temperature, top_p=top_p, **image_kwargs(problems),
                                  logprobs=logprobs)
        return self.apply(reqs, [samples[0] for samples in outputs], iteration, eos_ids, repeat)

    def pop_finished_groups(self) -> list[Group]:
        """Remove and return the groups whose k trajectories all finished, in draw order."""
        done = [g for g in self._groups.values() if g.finished]
        for g in done:
            del self._groups[g.group_id]
            del self._drawn_at[g.group_id]
        return done

    def stats(self, iteration: Optional[int] = None) -> dict[str, float]:
        """Scalars for logging: what the buffer holds; with ``iteration``, the age of its oldest group."""
        trajectories = [t for g in self._groups.values() for t in g.trajectories]
        out = {
            "buffer_groups": float(len(self._groups)),
            "buffer_unfinished": float(sum(not t.finished for t in trajectories)),
            "buffer_finished_waiting": float(sum(t.finished for t in trajectories)),
            "buffer_response_tokens": float(sum(len(t.response_ids) for t in trajectories)),
        }
        if iteration is not None:
            out["buffer_oldest_age"] = float(iteration - min(self._drawn_at.values(), default=iteration))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain Python state (lists, dicts, str, int, float, bool, None): loads with ``weights_only=True``."""
        return {
            "format": _STATE_FORMAT,
            "groups": [
                {"group_id": g.group_id, "drawn_at": self._drawn_at[g.group_id],
                 "problem": _problem_state(g.problem),
                 "trajectories": [_trajectory_state(t) for t in g.trajectories]}
                for g in self._groups.values()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the buffer's contents with ``state`` from ``state_dict``."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"rollout buffer state has format {state.get('format')!r}, expected "
                             f"{_STATE_FORMAT} (a checkpoint from another version of kimi-rl?)")
        self._groups, self._drawn_at = {}, {}
        for g in state["groups"]:
            problem = Problem(**copy.deepcopy(g["problem"]))
            trajectories = [Trajectory(group_id=g["group_id"], problem=problem, **copy.deepcopy(t))
                            for t in g["trajectories"]]
            self._groups[g["group_id"]] = Group(g["group_id"], problem, trajectories)
            self._drawn_at[g["group_id"]] = int(g["drawn_at"])


def release_stats(groups: list[Group]) -> dict[str, float]:
    """Scalars for logging one release of groups: segments per trajectory, finish-reason shares, length."""
    trajectories = [t for g in groups for t in g.trajectories]
    n = len(trajectories)
    if n == 0:
        return {"release_groups": 0.0}
    out = {
        "release_groups": float(len(groups)),
        "release_segments_mean": sum(t.segments for t in trajectories) / n,
        "release_response_tokens_mean": sum(len(t.response_ids) for t in trajectories) / n,
    }
    for reason in FINISH_REASONS:
        out[f"release_finish_{reason}"] = sum(t.finish_reason == reason for t in trajectories) / n
    return out


def _cut(t: Trajectory, length: int, reason: str) -> None:
    del t.response_ids[length:], t.logprobs[length:], t.versions[length:]
    t.finish_reason = reason


def _problem_state(p: Problem) -> dict[str, Any]:
    return {"uid": p.uid, "question": p.question, "answer": p.answer, "difficulty": p.difficulty,
            "meta": copy.deepcopy(dict(p.meta))}


def _trajectory_state(t: Trajectory) -> dict[str, Any]:
    return {"prompt_ids": list(t.prompt_ids), "response_ids": list(t.response_ids),
            "logprobs": list(t.logprobs), "versions": list(t.versions), "finish_reason": t.finish_reason,
            "reward": float(t.reward), "correct": bool(t.correct)}
