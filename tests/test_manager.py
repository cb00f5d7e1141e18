"""Runtime manager behaviour on a fake model with a deterministic clock (no real timing anywhere), and a real
Model driving clusters, frequencies and parking on a fake XU3 sysfs tree; bad profiles get one line."""
import json
import os
import warnings

import numpy as np
import pytest

from bench.manager import benchmark_decision
from fake_sysfs import XU3_A7, XU3_A7_KHZ, XU3_A15, XU3_A15_KHZ, board_file, make_xu3, read
from runtime import RuntimeUserError
from runtime import profile_schema as pdata
from runtime.bundle import check_profile, read_profile
from runtime.manager import BudgetWarning, Manager
from runtime.model import Model

BASE_MS = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}          # 1 thread, median
SPEEDUP = {1: 1.0, 2: 1.6}                           # 2 threads are faster...
POWER_W = {1: 1.0, 2: 2.2}                           # ...and cost more energy per inference
ACC = {1: 0.60, 2: 0.70, 3: 0.75, 4: 0.80}
TAIL = 1.1                                           # profiled p95 / median


def make_profile(energy=False):
    points = []
    for t in (1, 2):
        for k in (1, 2, 3, 4):
            med = BASE_MS[k] / SPEEDUP[t]
            p = {"id": len(points), "level": k, "backend": "fake", "pe": "all", "cluster": None, "threads": t,
                 "cpu_freq_khz": None, "gpu_freq_hz": None, "accuracy": ACC[k],
                 "latency_ms": {"median": med, "p95": TAIL * med, "n": 100},
                 "energy_mj": POWER_W[t] * med if energy else None, "power_w": POWER_W[t] if energy else None}
            points.append(p)
    prof = {"schema": pdata.SCHEMA, "schema_version": pdata.SCHEMA_VERSION, "points": points,
            "platform": {"board": "generic", "dvfs_available": False, "clusters": {"all": {"cpus": [0, 1]}}},
            "settings": {}, "energy": {"available": energy, "reason": None if energy else "no power sensors"}}
    prof.update(pdata.summarize(points))
    return prof


class Clock(object):
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeModel(object):
    """Records operating-point calls; infer() advances the clock by the point's latency x slowdown."""

    class backend(object):
        name = "fake"

    def __init__(self, clock):
        self.clock, self.levels = clock, [1, 2, 3, 4]
        self.level, self.threads = 4, None
        self.calls = []
        self.slowdown = 1.0
        self.slow_levels = None  # only these levels slow down (None: all)

    def set_operating_point(self, **kw):
        self.calls.append(kw)
        self.level = kw.get("level", self.level)
        self.threads = kw.get("threads", self.threads)

    def latency_ms(self):
        ms = BASE_MS[self.level] / SPEEDUP[self.threads or 1]
        if self.slow_levels is None or self.level in self.slow_levels:
            ms *= self.slowdown
        return ms

    def infer(self, x):
        self.clock.t += self.latency_ms() / 1e3
        return np.zeros((len(x), 10), np.float32)


X = np.zeros((1, 3, 32, 32), np.float32)


def make(energy=False, **kw):
    clock = Clock()
    model = FakeModel(clock)
    mgr = Manager(model, make_profile(energy), clock=clock, power_reader=kw.pop("power_reader", None), **kw)
    return mgr, model, clock


def run(mgr, model, clock, n, gap_s=0.0):
    """n calls; returns the latencies (ms) and the levels they ran at."""
    lat, lv = [], []
    for _ in range(n):
        mgr.infer(X)
        lat.append(mgr.last_latency_ms)
        lv.append(model.level)
        clock.t += gap_s
    return np.array(lat), np.array(lv)


def test_no_budget_runs_the_most_accurate_point_on_its_fastest_mapping():
    mgr, model, clock = make()
    mgr.infer(X)
    assert model.calls == [{"level": 4, "threads": 2}]
    assert mgr.point["level"] == 4 and mgr.point["threads"] == 2


def test_budget_picks_the_most_accurate_point_the_profile_says_meets_it_and_switches_only_what_changes():
    mgr, model, clock = make()
    mgr.infer(X)
    # p95 of L3 x2 = 1.1 * 3 / 1.6 = 2.06 ms; L4 x2 = 2.75 ms; margin 0.9 of 2.5 ms = 2.25 ms -> L3 on 2 threads
    mgr.set_budget(latency_ms=2.5)
    assert model.level == 4 and mgr.level == 3  # chosen now, applied at the next call
    mgr.infer(X)
    assert model.calls[-1] == {"level": 3} and model.level == 3 and model.threads == 2
    mgr.set_budget(latency_ms=None)
    mgr.infer(X)
    assert model.level == 4


def test_steps_down_when_slowed_and_back_up_once_the_load_is_gone_without_oscillating():
    mgr, model, clock = make()
    budget = 3.3  # L4 x2: 2.5 ms median, 2.75 p95 -> fits idle
    mgr.set_budget(latency_ms=budget)
    lat, lv = run(mgr, model, clock, 400, gap_s=0.002)
    assert (lv[-300:] == 4).all() and (lat <= budget).all()

    model.slowdown = 1.8  # another workload: everything 1.8x slower; L4 x2 now 4.5 ms
    lat, lv = run(mgr, model, clock, 2000, gap_s=0.002)
    first_ok = int(np.argmax(lat <= budget))
    assert first_ok <= 3, "stepped down within a few calls"
    settled = lat[20:]
    assert (settled <= budget).mean() >= 0.99 and lv[20:].max() <= 3
    assert len(set(lv[20:])) == 1, "no oscillation while the load is steady"

    model.slowdown = 1.0
    switches = mgr.switches
    lat, lv = run(mgr, model, clock, 2000, gap_s=0.002)
    assert lv[-1] == 4 and (lat <= budget).all()
    assert mgr.switches - switches <= 3, "climbs back one rung at a time, once"


def test_hysteresis_backs_off_from_a_point_that_keeps_failing():
    # Only levels 3-4 slow down: from L2 the slowdown is invisible, so the profile keeps suggesting L3.
    mgr, model, clock = make()
    budget = 3.3
    mgr.set_budget(latency_ms=budget)
    run(mgr, model, clock, 200, gap_s=0.002)
    model.slowdown, model.slow_levels = 3.0, (3, 4)
    lat, lv = run(mgr, model, clock, 20000, gap_s=0.002)  # ~65 s of fake time
    probes = int(np.sum((lv[1:] >= 3) & (lv[:-1] < 3)))
    # backoff 1, 2, 4, 8, 8, ... s: about a dozen probes in 65 s, not one per window
    assert 3 <= probes <= 12, "probes of the failing levels back off exponentially (%d probes)" % probes
    assert (lat <= budget).mean() >= 0.99


def test_a_budget_nothing_meets_runs_the_cheapest_point_and_warns_once():
    mgr, model, clock = make()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mgr.set_budget(latency_ms=0.1)
        run(mgr, model, clock, 300)
    assert len([x for x in w if issubclass(x.category, BudgetWarning)]) == 1
    assert mgr.level == 1 and model.level == 1 and model.threads == 2  # L1 x2: the lowest p95
    assert mgr.warnings and "cheapest" in mgr.warnings[0]


def test_a_load_that_breaks_even_the_cheapest_point_warns_once_not_per_call():
    mgr, model, clock = make()
    mgr.set_budget(latency_ms=1.0)
    run(mgr, model, clock, 100)
    model.slowdown = 5.0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        run(mgr, model, clock, 500)
    assert len([x for x in w if issubclass(x.category, BudgetWarning)]) == 1
    assert model.level == 1
    model.slowdown = 1.0  # L1 x2 is the only point within 1 ms: it stays there, and takes a new budget at once
    run(mgr, model, clock, 2000, gap_s=0.002)
    assert mgr.level == 1
    mgr.set_budget(latency_ms=3.3)
    run(mgr, model, clock, 10, gap_s=0.002)
    assert mgr.level == 4


def test_latency_counts_from_the_arrival_when_given():
    mgr, model, clock = make()
    mgr.set_budget(latency_ms=3.3)
    run(mgr, model, clock, 50, gap_s=0.002)
    arrival = clock.t - 0.004  # the request waited 4 ms before the call
    mgr.infer(X, arrival)
    assert mgr.last_latency_ms == pytest.approx(4.0 + model.latency_ms())
    with pytest.warns(BudgetWarning, match="cheapest"):  # 4 ms of waiting: no point meets 3.3 ms
        for _ in range(5):
            mgr.infer(X, clock.t - 0.004)
    assert mgr.level == 1, "waiting counts against the budget"


def test_energy_and_power_budgets_choose_by_the_profile():
    mgr, model, clock = make(energy=True)
    prof = mgr.profile
    mgr.set_budget(energy_mj=2.5)
    mgr.infer(X)
    # energy = W x ms: L4 x1 4.0, L3 x1 3.0, L2 x1 2.0, L2 x2 2.75 -> most accurate within 0.9 x 2.5: L2 x1
    best = max((p for p in prof["points"] if p["energy_mj"] <= 0.9 * 2.5), key=pdata.quality)
    assert (mgr.point["level"], mgr.point["threads"]) == (best["level"], best["threads"]) == (2, 1)
    mgr.set_budget(power_w=1.5)  # 2 threads draw 2.2 W: one thread, top level
    mgr.infer(X)
    assert (mgr.point["level"], mgr.point["threads"]) == (4, 1)
    mgr.set_budget(latency_ms=3.0, power_w=1.5)  # both: L4 x1 (4.4 ms p95) is too slow, L2 x1 (2.2) fits
    mgr.infer(X)
    assert (mgr.point["level"], mgr.point["threads"]) == (2, 1)


def test_power_feedback_steps_down_when_the_meter_reads_more_than_the_profile():
    watts = [1.0]
    mgr, model, clock = make(energy=True, power_reader=lambda: watts[0])
    mgr.set_budget(energy_mj=4.5)
    run(mgr, model, clock, 50, gap_s=0.01)
    assert mgr.point["level"] == 4 and mgr.point["threads"] == 1  # 4.0 mJ
    watts[0] = 2.0  # the board draws twice what the profile says
    run(mgr, model, clock, 300, gap_s=0.01)
    assert mgr.point["level"] <= 2


def test_energy_budget_without_sensors_is_refused_once_with_a_reason():
    mgr, model, clock = make(energy=False)
    with pytest.raises(RuntimeUserError, match="no energy measurements"):
        mgr.set_budget(energy_mj=1.0)
    with pytest.raises(RuntimeUserError, match="positive"):
        mgr.set_budget(latency_ms=-1)


def test_profile_for_another_engine_is_refused():
    prof = make_profile()
    for p in prof["points"]:
        p["backend"] = "tensorrt"
    with pytest.raises(RuntimeUserError, match="profile the bundle again"):
        Manager(FakeModel(Clock()), prof)


def test_decision_benchmark_steps_down_and_back_up_on_its_latency_pattern():
    lines = []
    res = benchmark_decision(make_profile(), calls=3000, out=lines.append)
    assert len(lines) == 1 and lines[0].startswith("manager decision: mean") and " us" in lines[0]
    assert res["calls"] == 3000 and res["ladder"] == 4
    # 8 calls at twice the budget every 608 calls: a step down and a climb back each time, nothing more
    assert 2 <= res["switches"] <= 2 * (3000 // 608 + 1) * 3


def test_the_ladder_is_the_pareto_front_of_the_budgeted_axes():
    mgr, model, clock = make(energy=True)
    pts = mgr.points
    mgr.set_budget(latency_ms=100.0)
    # 2 threads are faster at every level: the latency front holds the four 2-thread points only
    assert sorted((p["level"], p["threads"]) for p in mgr.ladder) == [(k, 2) for k in (1, 2, 3, 4)]
    mgr.set_budget(latency_ms=100.0, energy_mj=100.0)
    both = set((p["level"], p["threads"]) for p in mgr.ladder)
    assert both == set((p["level"], p["threads"]) for p in pts), "1 thread is cheaper in energy, 2 in time"
    dup = dict(pts[0], id=99)
    front = pdata.front(pts + [dup], ("latency_p95",))
    assert sum(1 for p in front if p["level"] == 1 and p["threads"] == pts[0]["threads"]) <= 1, \
        "of points equal in everything only one stays"


# ---- bad profiles (issue 10): one line naming the file and the field -----------------------------------

def one_line_error(fn, *match):
    with pytest.raises(RuntimeUserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and all(m in msg for m in match), msg
    return msg


def test_zero_latencies_are_refused_before_anything_divides_by_them():
    prof = make_profile()
    prof["points"][2]["latency_ms"]["p95"] = 0.0
    one_line_error(lambda: Manager(FakeModel(Clock()), prof), "points[2].latency_ms.p95", "positive")
    prof["points"][2]["latency_ms"].update(p95=1.0, median=0)
    one_line_error(lambda: Manager(FakeModel(Clock()), prof), "points[2].latency_ms.median")


def test_a_profile_that_is_not_an_object_or_misses_fields_gets_one_line(tmp_path):
    path = str(tmp_path / "profile.json")
    for doc, match in (([1, 2], "JSON object"), ({"schema": "dynn-profile"}, "schema_version"),
                       (dict(make_profile(), points=[]), "points"),
                       (dict(make_profile(), schema_version=1), "schema_version", ),
                       (dict(make_profile(), platform=[]), "platform")):
        with open(path, "w") as f:
            json.dump(doc, f)
        one_line_error(lambda: read_profile(path), path, match, "python -m runtime profile")
    prof = make_profile()
    del prof["points"][1]["level"]
    one_line_error(lambda: check_profile(prof, "p.json"), "p.json", "points[1].level")
    prof = make_profile()
    prof["points"][0]["threads"] = "2"
    one_line_error(lambda: check_profile(prof, "p.json"), "points[0].threads")
    with open(path, "w") as f:
        f.write("{not json")
    one_line_error(lambda: read_profile(path), "not valid JSON")
    one_line_error(lambda: read_profile(str(tmp_path / "nothing")), "no profile", "python -m runtime profile")


def manifest(target="xu3", groups=4, accuracy=None, sha="a" * 64):
    acc = accuracy or ACC
    return {"target": {"name": target, "board": None}, "model": {"groups": groups, "class_names": None},
            "levels": [{"level": k, "test_accuracy": acc[k]} for k in sorted(acc)],
            "engines": {"fake": {"file": "model.fake"}}, "files": {"model.fake": {"sha256": sha, "size": 1}},
            "input": {"shape": [None, 3, 32, 32], "normalisation": {"scale": 1 / 255.0, "mean": [0.5] * 3,
                                                                     "std": [0.25] * 3}},
            "output": {"shape": [None, 10]}}


def test_a_profile_of_another_bundle_is_refused():
    prof = make_profile()
    prof["bundle"] = pdata.bundle_identity(manifest())
    model = FakeModel(Clock())
    model.manifest = manifest()
    Manager(model, prof)  # its own bundle: accepted
    for other, match in ((manifest(target="nano-cpu"), "target"), (manifest(groups=3), "groups"),
                         (manifest(accuracy={**ACC, 2: 0.71}), "accuracies"),
                         (manifest(sha="b" * 64), "fake engine file")):
        model.manifest = other
        one_line_error(lambda: Manager(model, prof), "another", match, "python -m runtime profile")
    del prof["bundle"]
    model.manifest = manifest()
    one_line_error(lambda: Manager(model, prof), "bundle")


# ---- a real Model on a fake XU3: pinning, DVFS and parking -------------------------------------------

SPEED = {"a7": 2.8, "a15": 2.0}     # ms per level at 1 GHz
WATTS = {("a7", 200000): 0.4, ("a7", 1400000): 1.0, ("a15", 1000000): 1.5, ("a15", 2000000): 4.0}


def xu3_latency_ms(cluster, khz, level):
    return level * SPEED[cluster] * 1e6 / khz


class SysfsBackend(object):
    """An engine whose speed follows what the board really runs at: the cluster the process is pinned to and
    that cluster's clock as written in the fake sysfs tree (so a setting the manager did not apply shows)."""
    name, thread_safe, batch_sizes = "fake", True, None

    def __init__(self, root, cpus, clock):
        self.root, self.cpus, self.clock = root, cpus, clock
        self.threads = []

    def set_threads(self, n):
        self.threads.append(n)

    def run_level(self, x, level):
        here = frozenset(os.sched_getaffinity(0))
        cluster = [c for c, cpus in self.cpus.items() if frozenset(cpus) == here]
        assert len(cluster) == 1, "pinned to exactly one cluster: %s" % sorted(here)
        policy = XU3_A7 if cluster[0] == "a7" else XU3_A15
        khz = int(read(self.root, policy + "/scaling_setspeed"))
        self.clock.t += xu3_latency_ms(cluster[0], khz, level) / 1e3
        return np.zeros((len(x), 10), np.float32)

    def close(self):
        pass


def xu3_profile(man):
    points = []
    for (cluster, khz), watts in sorted(WATTS.items()):
        for k in (1, 2, 3, 4):
            ms = xu3_latency_ms(cluster, khz, k)
            points.append({"id": len(points), "level": k, "backend": "fake", "pe": cluster, "cluster": cluster,
                           "threads": 1, "cpu_freq_khz": khz, "gpu_freq_hz": None, "accuracy": ACC[k],
                           "latency_ms": {"median": ms, "p95": TAIL * ms}, "energy_mj": watts * ms, "power_w": watts})
    return {"schema": pdata.SCHEMA, "schema_version": pdata.SCHEMA_VERSION, "points": points,
            "bundle": pdata.bundle_identity(man), "settings": {"park_other_clusters": True},
            "platform": {"board": "odroid-xu3", "dvfs_available": True,
                         "clusters": {"a7": {"frequencies_khz": XU3_A7_KHZ}, "a15": {"frequencies_khz": XU3_A15_KHZ}}},
            "energy": {"available": True, "reason": None}}


def test_manager_pins_clusters_sets_frequencies_and_parks_the_idle_cluster_on_a_fake_xu3(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two usable CPUs to give the fake clusters distinct cores")
    root = make_xu3(str(tmp_path / "xu3"), userspace=True)
    clusters = {"a7": cpus[:1], "a15": cpus[-1:]}
    board = board_file(tmp_path, "odroid-xu3", [
        {"name": "a7", "aliases": ["little"], "core": "Cortex-A7", "cpus": clusters["a7"],
         "policy_candidates": [XU3_A7]},
        {"name": "a15", "aliases": ["big"], "core": "Cortex-A15", "cpus": clusters["a15"],
         "policy_candidates": [XU3_A15]}])
    before = dict((d, read(root, d + "/scaling_governor")) for d in (XU3_A7, XU3_A15))
    affinity = os.sched_getaffinity(0)
    clock = Clock()
    man = manifest()
    backend = SysfsBackend(root, clusters, clock)
    model = Model(str(tmp_path), man, backend, board=board, sysfs_root=root, state_dir=str(tmp_path / "state"))
    try:
        mgr = Manager(model, xu3_profile(man), clock=clock, power_reader=None)

        def run_at(expect, **budget):
            """Run under a budget; check what the board runs at, and that every call met the latency budget."""
            if budget:
                mgr.set_budget(**budget)
            lat, _ = run(mgr, model, clock, 40, gap_s=0.002)
            cluster, khz, level = expect
            parked = "a15" if cluster == "a7" else "a7"
            assert frozenset(os.sched_getaffinity(0)) == frozenset(clusters[cluster])
            assert read(root, (XU3_A7 if cluster == "a7" else XU3_A15) + "/scaling_setspeed") == str(khz)
            assert read(root, (XU3_A7 if parked == "a7" else XU3_A15) + "/scaling_setspeed") == "200000", \
                "the cluster not in use idles at its lowest clock"
            assert model.level == level and backend.threads[-1] == 1
            if budget.get("latency_ms"):
                assert (lat <= budget["latency_ms"]).all()

        run_at(("a15", 2000000, 4))                            # no budget: the top level, fastest mapping
        run_at(("a7", 200000, 4), power_w=1.2)                 # only the little cluster fits 1.08 W; lowest power
        run_at(("a7", 1400000, 3), latency_ms=8.5, power_w=1.2)  # L4 (8 ms seen) misses 0.9 x 8.5 ms
        run_at(("a15", 2000000, 2), latency_ms=2.5)            # 2.2 ms p95: back to the big cluster
    finally:
        model.close()
    assert dict((d, read(root, d + "/scaling_governor")) for d in (XU3_A7, XU3_A15)) == before
    assert os.sched_getaffinity(0) == affinity
