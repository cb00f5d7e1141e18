"""On-board profiling (`python -m runtime profile`) on this machine and on a fake XU3 tree; `build.py profile`."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli
from fake_sysfs import XU3_A7, XU3_A15, board_file, make_xu3
from runtime import load
from runtime import profile_schema as pdata
from runtime import profiler
from runtime.bundle import read_manifest
from runtime.manager import Manager


@pytest.fixture()
def bundle(host_bundle, tmp_path):
    """A private copy: profiling writes into the bundle."""
    dst = str(tmp_path / "host-cpu")
    shutil.copytree(host_bundle, dst)
    return dst


def options(bundle, **kw):
    kw.setdefault("runs", 15)
    return profiler.options(bundle, quick=True, **kw)


def check_front(points, ids, axis):
    by_id = dict((p["id"], p) for p in points)
    front = [by_id[i] for i in ids]
    assert [pdata.cost(p, axis) for p in front] == sorted(pdata.cost(p, axis) for p in front)
    for p in front:  # nobody is at least as cheap and strictly better
        assert not any(pdata.cost(o, axis) <= pdata.cost(p, axis) and pdata.quality(o) > pdata.quality(p)
                       for o in points)
    for p in points:  # everyone else is matched by a front point
        if p["id"] not in ids:
            assert any(pdata.cost(o, axis) <= pdata.cost(p, axis) and pdata.quality(o) >= pdata.quality(p)
                       for o in front)


def test_python_m_runtime_profile_quick_on_this_machine(bundle, tmp_path):
    state = tmp_path / "state"
    res = run_cli(["-m", "runtime", "profile", bundle, "--quick", "--runs", "15", "--placements", "0",
                   "--state-dir", str(state)],  # placements: tests/test_placement_profile.py
                  timeout=300)
    assert res.returncode == 0, res.stderr
    path = os.path.join(bundle, "profile.json")
    assert "wrote %s" % path in res.stdout and "python build.py profile" in res.stdout
    with open(path) as f:
        disk = json.load(f)
    assert disk["schema"] == "dynn-profile" and disk["schema_version"] == pdata.SCHEMA_VERSION
    man = read_manifest(bundle)
    assert dict((k, disk["bundle"][k]) for k in pdata.bundle_identity(man)) == pdata.bundle_identity(man)
    assert disk["bundle"]["engines"]["tflite"] == man["files"]["model.tflite"]["sha256"]
    threads = sorted(set([1, min(2, len(os.sched_getaffinity(0)))]))
    pts = disk["points"]
    assert len(pts) == 3 * len(threads)
    assert sorted((p["level"], p["threads"]) for p in pts) == sorted((k, t) for k in (1, 2, 3) for t in threads)
    for p in pts:
        assert p["backend"] == "tflite" and p["cpu_freq_khz"] is None and p["gpu_freq_hz"] is None
        lat = p["latency_ms"]
        assert lat["min"] <= lat["median"] <= lat["p95_all"] <= lat["max"] and lat["n"] == 15
        assert min(lat["p95_rounds"]) <= lat["p95"] <= max(lat["p95_rounds"]) and len(lat["p95_rounds"]) == 3
        assert p["energy_mj"] is None and p["accuracy"] is not None
    assert disk["energy"]["available"] is False and disk["energy"]["reason"]
    assert disk["platform"]["dvfs_available"] is False
    for axis in ("latency", "latency_p95"):
        check_front(pts, disk["fronts"][axis], axis)
    assert disk["fronts"]["energy"] == []
    dr = disk["dynamic_range"]
    for part in ("points", "front", "levels"):
        r = dr[part]["latency_ms"]
        assert r["min"] <= r["max"] and r["ratio"] == pytest.approx(r["max"] / r["min"])
        assert dr[part]["energy_mj"] is None
    assert dr["levels"]["mapping"]["backend"] == "tflite"
    assert not state.exists(), "no clock was written, so no state was saved"

    # the manager takes the profile as it is and runs the real model within a generous budget
    with load(bundle) as m:
        mgr = Manager(m, bundle)
        mgr.set_budget(latency_ms=10 * dr["points"]["latency_ms"]["max"])
        for _ in range(5):
            assert mgr.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
        assert mgr.level == max(pts, key=pdata.quality)["level"], "a generous budget runs the most accurate level"


def test_profile_on_a_fake_xu3_sweeps_clusters_and_frequencies_and_restores_them(bundle, tmp_path):
    root = str(tmp_path / "xu3")
    make_xu3(root)
    cpus = sorted(os.sched_getaffinity(0))
    board = board_file(tmp_path, "odroid-xu3", [
        {"name": "a7", "aliases": ["little"], "core": "Cortex-A7", "cpus": cpus[:1], "policy_candidates": [XU3_A7]},
        {"name": "a15", "aliases": ["big"], "core": "Cortex-A15", "cpus": cpus[-1:], "policy_candidates": [XU3_A15]}])

    def snapshot():  # every setting; not scaling_cur_freq, the (simulated) kernel's own report under ondemand
        out = {}
        for d in (XU3_A7, XU3_A15):
            for name in sorted(set(os.listdir(os.path.join(root, d))) - {"scaling_cur_freq"}):
                with open(os.path.join(root, d, name)) as f:
                    out[d + "/" + name] = f.read().strip()
        return out

    before, affinity = snapshot(), os.sched_getaffinity(0)
    out = str(tmp_path / "xu3-profile.json")
    opts = options(bundle, out=out, runs=10, freqs="2", threads="1", levels="1,2", energy_s=0.3, board=board,
                   sysfs_root=root, state_dir=str(tmp_path / "state"), placements=0)  # test_placement_profile
    prof, path = profiler.run(opts, log=lambda *a: None)
    assert snapshot() == before and os.sched_getaffinity(0) == affinity
    assert path == out and not os.path.exists(os.path.splitext(out)[0] + ".png"), "the board draws no plot"
    caps = prof["power_mode"]["caps"]  # the caps the sweep ran under, as the platform reads them
    assert caps["a7"]["max_khz"] == 1400000 and caps["a15"]["max_khz"] == 2000000
    pts = prof["points"]
    assert sorted((p["pe"], p["cpu_freq_khz"], p["level"]) for p in pts) == sorted(
        (c, f, k) for c, fs in (("a7", (200000, 1400000)), ("a15", (200000, 2000000))) for f in fs for k in (1, 2))
    assert prof["settings"]["park_other_clusters"] is True and prof["platform"]["dvfs_available"] is True
    for p in pts:
        assert p["energy_mj"] > 0 and p["power_w"] == pytest.approx(2.0, rel=0.01)  # the fake rails sum to 2 W
    check_front(pts, prof["fronts"]["energy"], "energy")
    assert prof["dynamic_range"]["points"]["energy_mj"]["ratio"] >= 1.0
    assert prof["dynamic_range"]["levels"]["energy_mj"] is not None
    assert set(prof["switch_ms"]) >= {"level", "cpu_freq", "cluster"}


def test_build_py_profile_plots_an_existing_profile_and_refuses_to_measure_board_bundles(bundle, tmp_path):
    profiler.run(options(bundle), log=lambda *a: None)
    assert not os.path.exists(os.path.join(bundle, "profile.png"))
    res = run_cli(["build.py", "profile", bundle])
    assert res.returncode == 0, res.stderr
    assert os.path.getsize(os.path.join(bundle, "profile.png")) > 10000 and "latency front" in res.stdout

    board_bundle = str(tmp_path / "xu3")
    shutil.copytree(bundle, board_bundle)
    os.remove(os.path.join(board_bundle, "profile.json"))
    man_path = os.path.join(board_bundle, "manifest.json")
    with open(man_path) as f:
        man = json.load(f)
    man["target"]["board"] = "odroid-xu3"
    with open(man_path, "w") as f:
        json.dump(man, f)
    res = run_cli(["build.py", "profile", board_bundle])
    assert res.returncode == 1 and "python -m runtime profile BUNDLE" in res.stderr
    assert len(res.stderr.splitlines()) == 1


def test_build_py_profile_refuses_the_profile_of_another_bundle(bundle, tmp_path):
    profiler.run(options(bundle, levels="1"), log=lambda *a: None)
    other = str(tmp_path / "other")
    shutil.copytree(bundle, other)
    man_path = os.path.join(other, "manifest.json")
    with open(man_path) as f:
        man = json.load(f)
    man["levels"][0]["test_accuracy"] = 0.123  # a retrained model: the profile's accuracies are not its own
    with open(man_path, "w") as f:
        json.dump(man, f)
    res = run_cli(["build.py", "profile", other, "--plot-only"])
    assert res.returncode == 1 and "another bundle" in res.stderr and "accuracies" in res.stderr
    assert len(res.stderr.splitlines()) == 1 and not os.path.exists(os.path.join(other, "profile.png"))


def test_profiler_runs_with_the_runtime_only(bundle, tmp_path):
    out = str(tmp_path / "p.json")
    code = ("import runpy, sys\n"
            "for mod in ('torch', 'onnx', 'compile', 'bench', 'matplotlib'): sys.modules[mod] = None\n"
            "sys.argv = ['runtime', 'profile', %r, '--quick', '--runs', '10', '--out', %r]\n"
            "runpy.run_module('runtime', run_name='__main__')\n" % (bundle, out))
    res = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert os.path.isfile(out) and not os.path.exists(str(tmp_path / "p.png"))


def test_profiler_errors_are_one_line(bundle, tmp_path):
    for args, match in (([str(tmp_path / "missing")], "does not exist"),
                        ([bundle, "--threads", "a,b"], "--threads"), ([bundle, "--levels", "0"], "--levels"),
                        ([bundle, "--levels", "9"], "not in this bundle"), ([bundle, "--runs", "2"], "--runs"),
                        ([bundle, "--out", str(tmp_path / "no" / "p.json")], "does not exist")):
        res = run_cli(["-m", "runtime", "profile"] + args + ["--quick"])
        lines = [l for l in res.stderr.splitlines() if not l.startswith("INFO:")]  # TFLite's own banner
        assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], \
            res.stderr
    assert not os.path.exists(os.path.join(bundle, "profile.json")), "a refused run writes nothing"


def test_profiler_and_manager_are_python_3_6_compatible():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    res = subprocess.run([vermin, "-q", "--no-tips", "-t=3.6-", "--violations", "--eval-annotations",
                          os.path.join(ROOT, "runtime", "profiler.py"), os.path.join(ROOT, "runtime", "manager"),
                          os.path.join(ROOT, "runtime", "profile_schema.py")], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True)
    assert res.stdout.strip() == "", res.stdout


def test_the_levels_alone_range_is_taken_on_a_mapping_every_level_was_measured_on():
    """A placement proposed for levels 3-4 only can be the top level's fastest point; the 'levels alone'
    range must still compare all levels on one mapping (it read 1.0x on the shipped profile of 2026-12-08)."""
    from runtime import profile_schema as ps

    def pt(i, level, ms, placement=None, threads=2):
        return {"id": i, "level": level, "backend": "tflite", "pe": "cpu:0+cpu:1" if placement else "all",
                "cluster": None, "threads": None if placement else threads, "cpu_freq_khz": None,
                "gpu_freq_hz": None, "placement": placement, "precision": "fp32", "accuracy": 0.8 + level / 100,
                "latency_ms": {"median": ms, "p95": ms}, "energy_mj": None}

    split = {"cpu:0": {"engine": "tflite", "groups": [4], "threads": 1},
             "cpu:1": {"engine": "tflite", "groups": [1, 2, 3], "threads": 1}}
    pts = [pt(k, k, 0.2 * k * k) for k in (1, 2, 3, 4)] + [pt(4 + k, k, 0.3 * k * k, threads=1) for k in (1, 2, 3, 4)]
    pts.append(pt(9, 4, 2.5, placement=split))  # faster than level 4 on two threads (3.2 ms)
    levels = ps.summarize(pts)["dynamic_range"]["levels"]
    assert levels["mapping"]["threads"] == 2 and levels["mapping"]["placement"] is None
    assert levels["latency_ms"]["ratio"] == pytest.approx(16.0)
