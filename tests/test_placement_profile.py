"""Placements in the profile (issue 14): proposed from per-group times, measured, recorded, chosen by the manager."""
import copy
import os
import sys
import warnings

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import runtime  # noqa: E402
from runtime import profile_schema as ps  # noqa: E402
from runtime import profiler  # noqa: E402
from runtime.bundle import check_profile  # noqa: E402
from runtime.errors import RuntimeUserError  # noqa: E402
from runtime.manager import BudgetWarning, Manager  # noqa: E402
from runtime import placement_profile  # noqa: E402
from runtime.placement_profile import group_times, propose  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "tests"))
from fake_sysfs import XU3_A7, XU3_A15, board_file, make_xu3, read  # noqa: E402

BUNDLE = os.path.join(REPO, "artifacts", "host-cpu")
needs_two = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placements need two usable CPUs")


def test_greedy_longest_first_gives_each_group_to_the_pe_that_finishes_it_first():
    times = {"a": [4.0, 3.0, 2.0, 1.0], "b": [8.0, 6.0, 4.0, 2.0]}  # b is half as fast
    # by falling mean time: g1 -> a (4 < 8), g2 -> b (6 < 4+3), g3 -> a (6 < 10), g4 -> a (7 < 8);
    # then g1 forced onto b (8), the rest to a (3, 5, 6)
    assert propose(4, times, 0.05, 3) == [(pytest.approx(7.05), {"a": [1, 3, 4], "b": [2]}),
                                          (pytest.approx(8.05), {"a": [2, 3, 4], "b": [1]})]


def test_proposals_skip_splits_that_leave_a_pe_empty_and_keep_the_best_predicted():
    slow = {"a": [1.0, 1.0], "b": [1.0, 1.0], "c": [5.0, 5.0]}  # c gets a group only when forced to
    assert propose(2, slow, 0.0, 5) == [(1.0, {"a": [1], "b": [2]}), (1.0, {"a": [2], "b": [1]}),
                                        (5.0, {"a": [2], "c": [1]}), (5.0, {"b": [2], "c": [1]})]
    assert propose(2, slow, 0.0, 1) == [(1.0, {"a": [1], "b": [2]})]
    assert propose(1, slow, 0.0, 5) == []  # one group cannot be split
    three = {"a": [1.0] * 3, "b": [1.0] * 3, "c": [1.0] * 3}
    assert {"a": [1], "b": [2], "c": [3]} in [pl for _, pl in propose(3, three, 0.0, 20)]  # all three PEs


def _equal_times(model, pes, x, runs):
    """Per-group times as on an idle machine (the shared test machine's load would change the proposals)."""
    return dict((pe, [1.0] * model.levels[-1]) for pe in pes), 0.05


@needs_two
def test_group_times_are_measured_alone_on_each_pe_through_its_worker():
    with runtime.load(BUNDLE, threads=1) as model:
        times, handoff = group_times(model, ["cpu:0", "cpu:1"], np.zeros((1, 3, 32, 32), np.float32), 5)
        assert sorted(times) == ["cpu:0", "cpu:1"] and all(len(t) == 4 and min(t) > 0 for t in times.values())
        assert 0 < handoff < 50 and model.placement is None


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(placement_profile, "group_times", _equal_times)
    tmp = tmp_path_factory.mktemp("profile")
    opts = profiler.options(BUNDLE, quick=True, runs=10, warmup=1, rounds=1, levels="3,4", threads="1",
                            placements=1, out=str(tmp / "profile.json"), state_dir=str(tmp / "state"))
    try:
        prof, _ = profiler.run(opts, log=lambda *a: None)
    finally:
        mp.undo()
    return prof


@needs_two
def test_the_profile_measures_one_proposed_split_per_level_and_records_it(profile):
    split = [p for p in profile["points"] if p.get("placement")]
    assert profile["schema_version"] == 3 and sorted(p["level"] for p in split) == [3, 4]
    for p in split:
        groups = sorted(g for part in p["placement"].values() for g in part["groups"])
        assert groups == list(range(1, p["level"] + 1)) and len(p["placement"]) == 2
        assert p["predicted_ms"] == pytest.approx(2.05)  # equal times: two groups on the busier PE
        assert p["predicted_ms"] > 0 and p["latency_ms"]["median"] > 0 and p["pe"] == "cpu:0+cpu:1"
        assert ps.label(p) == "L%d cpu:0+cpu:1" % p["level"]
    check_profile(profile, "profile", runtime.load(BUNDLE, prepare=False).manifest)
    assert len(set(ps.mapping(p) for p in profile["points"])) == 1 + len(split)  # one PE x1, each split
    assert profile["switch_ms"]["placement"]["n"] >= 1  # what switching to and from a split cost, as measured


@needs_two
def test_the_manager_runs_a_split_point_it_chooses_with_the_sequential_logits(profile):
    prof = copy.deepcopy(profile)
    for p in prof["points"]:  # the level-4 split the fastest most accurate point: the manager starts there
        if p.get("placement") and p["level"] == 4:
            p["latency_ms"]["median"] = p["latency_ms"]["p95"] = 1e-3
        if not p.get("placement") and p["level"] == 3:  # and level 3 on one PE the only one within 5e-4 ms
            p["latency_ms"]["median"] = p["latency_ms"]["p95"] = 1e-4
    prof.update(ps.summarize(prof["points"]))
    x = np.random.RandomState(3).randn(2, 3, 32, 32).astype(np.float32)
    with runtime.load(BUNDLE, threads=1) as model:
        want = model.infer(x, 4)
        mgr = Manager(model, prof)
        np.testing.assert_array_equal(mgr.infer(x), want)
        assert model.placement == [p for p in prof["points"] if p.get("placement") and p["level"] == 4][0]["placement"]
        mgr.set_budget(latency_ms=5e-4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BudgetWarning)  # real calls take longer than the edited profile says
            for _ in range(3):
                mgr.infer(x)
        assert model.level == 3 and model.placement is None
        np.testing.assert_array_equal(mgr.infer(x), model.infer(x, 3))


def test_a_bad_placement_in_a_profile_is_one_line_naming_the_field(profile):
    prof = copy.deepcopy(profile)
    prof["points"].append(dict(prof["points"][0], id=99, placement={"cpu:0": {"groups": "1,2", "engine": "tflite"}}))
    with pytest.raises(RuntimeUserError) as exc:
        check_profile(prof, "p.json")
    assert "points[%d].placement.cpu:0.groups" % (len(prof["points"]) - 1) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_version_2_profile_without_placements_is_still_read(profile):
    prof = copy.deepcopy(profile)
    prof["schema_version"] = 2
    prof["points"] = [p for p in prof["points"] if not p.get("placement")]
    assert check_profile(prof, "p.json") is prof
    prof["schema_version"] = 4
    with pytest.raises(RuntimeUserError, match="schema_version"):
        check_profile(prof, "p.json")


@needs_two
def test_on_a_fake_xu3_a_split_runs_both_clusters_at_full_clock_and_every_clock_is_restored(tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setattr(placement_profile, "group_times", _equal_times)
    root = str(tmp_path / "xu3")
    make_xu3(root)
    cpus = sorted(os.sched_getaffinity(0))
    board = board_file(tmp_path, "odroid-xu3", [
        {"name": "a7", "aliases": ["little"], "core": "Cortex-A7", "cpus": cpus[:1], "policy_candidates": [XU3_A7]},
        {"name": "a15", "aliases": ["big"], "core": "Cortex-A15", "cpus": cpus[-1:], "policy_candidates": [XU3_A15]}])
    files = [d + "/" + n for d in (XU3_A7, XU3_A15) for n in ("scaling_governor", "scaling_min_freq",
                                                               "scaling_max_freq", "scaling_setspeed")]
    before, affinity = [read(root, f) for f in files], os.sched_getaffinity(0)
    opts = profiler.options(BUNDLE, quick=True, runs=10, warmup=1, rounds=1, freqs="2", threads="1", levels="2",
                            energy_s=0.3, board=board, sysfs_root=root, state_dir=str(tmp_path / "state"),
                            out=str(tmp_path / "p.json"))
    prof, _ = profiler.run(opts, log=lambda *a: None)
    split = [p for p in prof["points"] if p.get("placement")]
    assert [p["pe"] for p in split] == ["a15+a7"]
    assert split[0]["cpu_freqs_khz"] == {"a7": 1400000, "a15": 2000000}
    assert split[0]["placement"] == {"a15": {"groups": [1], "engine": "tflite", "threads": 1},
                                     "a7": {"groups": [2], "engine": "tflite", "threads": 1}}
    assert [read(root, f) for f in files] == before and os.sched_getaffinity(0) == affinity
