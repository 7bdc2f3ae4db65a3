import random

import pytest

from kimi_rl.tasks.arithmetic import extract_answer, make_problems, make_trace, verify


def test_verifier_hand_cases():
    assert verify("7+8=15 c1\nans 15\n\\boxed{15}", "15") == 1.0  # right
    assert verify("\\boxed{14}", "15") == 0.0  # wrong
    assert verify("\\boxed{1 5}", "15") == 0.0  # malformed
    assert verify("\\boxed{15", "15") == 0.0  # unclosed
    assert verify("ans 15", "15") == 0.0  # no boxed answer
    assert verify("", "15") == 0.0
    assert verify("\\boxed{12} no \\boxed{15}", "15") == 1.0  # the last one counts
    assert verify("\\boxed{015}", "15") == 1.0  # integer comparison
    assert extract_answer("x \\boxed{ 42 } y") == "42"


def test_problems_deterministic_and_disjoint():
    a_train, a_held = make_problems([1, 2, 3], 300, 50, seed=3)
    b_train, b_held = make_problems([1, 2, 3], 300, 50, seed=3)
    assert [p.uid for p in a_train] == [p.uid for p in b_train]
    assert {p.uid for p in a_train}.isdisjoint({p.uid for p in a_held})
    c_train, _ = make_problems([1, 2, 3], 300, 50, seed=4)
    assert [p.uid for p in c_train] != [p.uid for p in a_train]
    # level 1 has only 100 ordered pairs: at most a fifth is held out
    assert sum(p.difficulty == 1 for p in a_held) == 20
    assert sum(p.difficulty == 1 for p in a_train) == 80
    for p in a_train:
        a, b = p.question.rstrip("=").split("+")
        assert len(a) == len(b) == p.difficulty and int(p.answer) == int(a) + int(b)


def test_traces_are_correct_deterministic_and_spread():
    for q in ["7+5=", "37+48=", "905+96=", "4321+9879="]:
        answer = str(sum(int(x) for x in q.rstrip("=").split("+")))
        traces = [make_trace(q, random.Random(i), 3, 0.3) for i in range(40)]
        assert all(verify(t, answer) == 1.0 for t in traces)
        assert traces == [make_trace(q, random.Random(i), 3, 0.3) for i in range(40)]
        lengths = [len(t) for t in traces]
        assert max(lengths) >= 3 * min(lengths), (q, min(lengths), max(lengths))


def test_trace_shows_error_then_correction():
    t = make_trace("37+48=", random.Random(0), 0, 1.0)
    lines = t.splitlines()
    assert lines[0].endswith(" no") and lines[1] == "7+8=15 c1"
    assert "check" not in t


def test_peel_traces_head_each_column_with_what_is_left_of_the_operands():
    import doctest

    from kimi_rl.tasks import arithmetic

    assert doctest.testmod(arithmetic).failed == 0
    t = make_trace("905+96=", random.Random(0), 0, 0.0, "peel")
    assert t.splitlines() == ["905+96: 5+6=11 c1 r1", "90+9: 0+9+1=10 c1 r01", "9+0: 9+0+1=10 c1 r001", "ans 1001",
                              "\\boxed{1001}"]
    for q in ["7+5=", "37+48=", "905+96=", "4321+9879="]:
        a, b = q.rstrip("=").split("+")
        for i in range(30):
            trace = make_trace(q, random.Random(i), 3, 0.3, "peel")
            assert verify(trace, str(int(a) + int(b))) == 1.0 and trace == make_trace(q, random.Random(i), 3, 0.3, "peel")
            steps = [line for line in trace.splitlines() if " r" in line]  # the right sum of each column
            heads = [line.split(":")[0] for line in steps]
            assert heads[0] == f"{a}+{b}" and len(steps) == max(len(a), len(b))
            for prev, head in zip(heads, heads[1:]):  # each head is the one above minus a digit per operand
                pa, pb = prev.split("+")
                assert head == f"{pa[:-1] or 0}+{pb[:-1] or 0}"
            assert steps[-1].rsplit(" r", 1)[1] == str(int(a) + int(b))[-len(steps):]
    # the columns format's traces (and its random draws) are unchanged by the new option
    assert make_trace("37+48=", random.Random(5), 3, 0.3) == make_trace("37+48=", random.Random(5), 3, 0.3, "columns")
    with pytest.raises(ValueError, match="trace_format"):
        make_trace("7+5=", random.Random(0), 0, 0.0, "rows")
