"""The math verifier (src/rewards/math.py): equivalent forms, wrong and malformed answers,
GSM8K references, timeouts and errors counted, the process pool, the registry entry."""
from __future__ import annotations

import pickle
import threading

import pytest

from kimi_rl.rewards import VERIFIERS
from kimi_rl.rewards.math import MathVerifier, gold_text, last_boxed, math_verifier, SampleScore, score_sample
from kimi_rl.tasks.base import Problem

# sympy evaluates 9^(9^9) (~370M digits) for minutes; it stops at the SIGALRM within milliseconds.
PATHOLOGICAL = r"so the answer is \boxed{9^{9^{9}}}"


def _p(answer: str, uid: str = "p") -> Problem:
    return Problem(uid=uid, question="?", answer=answer)


@pytest.mark.parametrize(
    "response, answer",
    [
        (r"The answer is \boxed{0.5}", r"\frac{1}{2}"),
        (r"\boxed{\frac{1}{2}}", "0.5"),
        (r"\boxed{\frac{1}{2}}", r"\dfrac12"),
        ("x=3", "3"),
        (r"The answer is $x = 3$.", "3"),
        (r"\boxed{3}", "x=3"),
        (r"\boxed{50\%}", "0.5"),
        (r"\boxed{0.5}", r"50\%"),
        (r"\boxed{(1,2)}", "(1, 2)"),
        ("We get 42.", "42"),
    ],
)
def test_equivalent_forms_score_one(response, answer):
    assert score_sample(response, answer, timeout_s=5.0).reward == 1.0


@pytest.mark.parametrize(
    "response, answer, outcome",
    [
        (r"\boxed{81}", "80", "wrong"),
        (r"\boxed{\frac{1}{3}}", "0.5", "wrong"),
        (r"\boxed{}", "5", "no_answer"),
        (r"\boxed{5", "5", "no_answer"),
        ("", "5", "no_answer"),
        ("I do not know", "5", "no_answer"),
        ("5", r"\boxed{", "error"),  # a reference that does not parse is a counted error, not a crash
    ],
)
def test_wrong_and_malformed_score_zero(response, answer, outcome):
    assert score_sample(response, answer, timeout_s=5.0) == SampleScore(reward=0.0, outcome=outcome)


def test_last_boxed_decides():
    text = r"First \boxed{3}, no wait: \boxed{\frac{8}{2}}"
    assert last_boxed(text) == r"\frac{8}{2}"
    assert score_sample(text, "4", 5.0).reward == 1.0
    assert score_sample(text, "3", 5.0).reward == 0.0
    assert last_boxed(r"\boxed {7} and \boxed{unclosed") == "7"
    assert last_boxed("no box") is None


def test_gsm8k_reference():
    ref = "The library has 1000 + 200 = <<1000+200=1200>>1200 books.\n#### 1,200"
    assert gold_text(ref) == r"\boxed{1200}"
    assert gold_text("Tom has 12.\n#### 12.") == r"\boxed{12}"
    assert score_sample(r"So \boxed{1200}", ref, 5.0).reward == 1.0
    assert score_sample("They have 1,200 books", ref, 5.0).reward == 1.0
    assert score_sample(r"\boxed{1000}", ref, 5.0).reward == 0.0


def test_timeout_scores_zero_and_is_counted():
    verifier = math_verifier(timeout_s=1.0)  # 9^(9^9) never ends; a plain answer needs ms
    rewards = verifier([PATHOLOGICAL, r"\boxed{5}"], [_p("5", "a"), _p("5", "b")])
    assert rewards == [0.0, 1.0]
    assert verifier.stats == {"samples": 2, "correct": 1, "wrong": 0, "no_answer": 0, "errors": 0, "timeouts": 1}


def test_stats_accumulate_and_reset():
    verifier = math_verifier()
    verifier([r"\boxed{1}", r"\boxed{2}", "none", "5"], [_p("1"), _p("1"), _p("1"), _p(r"\boxed{")])
    assert verifier.stats == {"samples": 4, "correct": 1, "wrong": 1, "no_answer": 1, "errors": 1, "timeouts": 0}
    verifier([r"\boxed{1}"], [_p("1")])
    assert verifier.stats["samples"] == 5 and verifier.stats["correct"] == 2
    verifier.reset_stats()
    assert sum(verifier.stats.values()) == 0


def test_process_pool_scores_and_times_out():
    verifier = math_verifier(workers=1, timeout_s=1.0, chunk_size=2)
    try:
        rewards = verifier([r"\boxed{0.5}", PATHOLOGICAL, "x=7"], [_p(r"\frac12"), _p("5"), _p("#### 7")])
    finally:
        verifier.close()
    assert rewards == [1.0, 0.0, 1.0]
    assert verifier.stats["timeouts"] == 1 and verifier.stats["correct"] == 2


def test_main_process_scoring_refuses_other_threads():
    verifier = math_verifier()
    errors: list[BaseException] = []

    def run():
        try:
            verifier([r"\boxed{1}"], [_p("1")])
        except RuntimeError as err:
            errors.append(err)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors and "main thread" in str(errors[0])


def test_options_checked_and_picklable():
    with pytest.raises(ValueError, match="unknown option.*workerz.*valid: timeout_s"):
        math_verifier(workerz=2)
    with pytest.raises(ValueError, match="timeout_s"):
        math_verifier(timeout_s=0)
    with pytest.raises(ValueError, match="2 responses but 1 problems"):
        math_verifier()(["1", "2"], [_p("1")])
    clone = pickle.loads(pickle.dumps(math_verifier(timeout_s=3.0, workers=2)))
    assert isinstance(clone, MathVerifier) and clone.timeout_s == 3.0 and clone._pool is None


def test_registry_entry():
    added = "math" not in VERIFIERS
    if added:
        VERIFIERS.register_lazy("math", "kimi_rl.rewards.math:math_verifier")
    try:
        verifier = VERIFIERS.get("math")(timeout_s=5.0)
        assert verifier([r"\boxed{2}"], [_p("2")]) == [1.0]
    finally:
        if added:
            VERIFIERS.unregister("math")
