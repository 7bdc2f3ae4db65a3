"""The LD_PRELOAD comparison of ``make bench`` (src/bench/preload.py): which libraries it finds, the variants and
their rotated orders, each child's environment, how the best figures and ratios are taken, and a child that fails."""
from __future__ import annotations

from kimi_rl.bench import preload


def test_libraries_are_found_by_their_names_in_order(tmp_path):
    venv, system = tmp_path / "venv_lib", tmp_path / "usr_lib"
    venv.mkdir()
    system.mkdir()
    (venv / "libiomp5.so").write_bytes(b"")
    (system / "libiomp5.so").write_bytes(b"")  # the environment's own copy comes first
    (system / "libtcmalloc.so.4").write_bytes(b"")
    (system / "libtcmalloc_minimal.so.4").write_bytes(b"")  # the minimal build is the preferred name
    assert preload.find_libraries([venv, system]) == {"iomp": venv / "libiomp5.so",
                                                      "tcmalloc": system / "libtcmalloc_minimal.so.4"}
    assert preload.find_libraries([tmp_path / "absent"]) == {"iomp": None, "tcmalloc": None}


def test_variants_are_none_each_library_and_all_together():
    assert preload.variants({"iomp": None, "tcmalloc": None}) == {"none": ""}
    assert preload.variants({"iomp": "/a/libiomp5.so", "tcmalloc": None}) == {"none": "", "iomp": "/a/libiomp5.so"}
    assert preload.variants({"iomp": "/a/i.so", "tcmalloc": "/b/t.so"}) == {
        "none": "", "iomp": "/a/i.so", "tcmalloc": "/b/t.so", "iomp+tcmalloc": "/a/i.so:/b/t.so"}


def test_each_round_rotates_the_order():
    assert preload.round_orders(["a", "b", "c"], 4) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                        ["a", "b", "c"]]
    assert preload.round_orders(["none"], 2) == [["none"], ["none"]]


def test_a_child_gets_exactly_its_preload(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/inherited.so")
    assert "LD_PRELOAD" not in preload.child_env("")  # "none" means none, not the parent's
    assert preload.child_env("/a/i.so:/b/t.so")["LD_PRELOAD"] == "/a/i.so:/b/t.so"


def test_best_of_the_rounds_and_ratios_to_no_preload(monkeypatch):
    figures = {"": [(100.0, 50.0), (120.0, 40.0)], "/a/i.so": [(90.0, 60.0), (99.0, 55.0)]}
    calls: list[str] = []

    def fake_child(spec, ld_preload):
        calls.append(ld_preload)
        rollout, train = figures[ld_preload][sum(c == ld_preload for c in calls) - 1]
        return {"rollout_tokens_per_s": rollout, "train_tokens_per_s": train}

    monkeypatch.setattr(preload, "run_child", fake_child)
    r = preload.compare({}, 2, {"iomp": "/a/i.so", "tcmalloc": None})
    assert calls == ["", "/a/i.so", "/a/i.so", ""]  # the second round starts with the other variant
    none, iomp = r["variants"]["none"], r["variants"]["iomp"]
    assert (none["rollout_tokens_per_s"], none["train_tokens_per_s"]) == (120.0, 50.0)  # best of each figure
    assert (iomp["rollout_tokens_per_s"], iomp["train_tokens_per_s"]) == (99.0, 60.0)
    assert iomp["rollout_over_none"] == 99.0 / 120.0 and iomp["train_over_none"] == 60.0 / 50.0
    assert r["libraries"] == {"iomp": "/a/i.so", "tcmalloc": None}
    text = preload.format_preload(r)
    assert "not on this machine: tcmalloc" in text and "0.825" in text and "1.200" in text


def test_a_variant_whose_children_all_fail_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(preload, "run_child", lambda spec, ld: {"error": "exit 1: boom"} if ld else
                        {"rollout_tokens_per_s": 10.0, "train_tokens_per_s": 5.0})
    r = preload.compare({}, 1, {"iomp": "/a/i.so", "tcmalloc": None})
    assert r["variants"]["iomp"] == {"ld_preload": "/a/i.so", "error": "exit 1: boom"}
    assert "iomp             | failed: exit 1: boom" in preload.format_preload(r)


def test_a_failing_child_process_gives_its_exit_status_and_last_error_line():
    r = preload.run_child({"model": "/nonexistent/model"}, "", timeout_s=300)  # a real child: KeyError on the spec
    assert r["error"].startswith("exit 1: ") and "KeyError" in r["error"]
