"""On-board profiling (board_scripts/profile.py) on this machine and on a fake XU3 tree; `build.py profile`."""
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
from runtime import profile_data as pdata
from runtime.manager import Manager


@pytest.fixture()
def bundle(host_bundle, tmp_path):
    """A private copy: profiling writes into the bundle."""
    dst = str(tmp_path / "host-cpu")
    shutil.copytree(host_bundle, dst)
    return dst


def profiler():
    from bench.profile_cmd import load_profiler
    return load_profiler()


def options(bundle, **kw):
    from bench.profile_cmd import measure_options
    opts = measure_options(bundle, kw.pop("out", None), quick=True, runs=kw.pop("runs", 15))
    for k, v in kw.items():
        setattr(opts, k, v)
    return opts


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


def test_quick_profile_on_this_machine(bundle, tmp_path):
    state = tmp_path / "state"
    opts = options(bundle, state_dir=str(state))
    prof, path, png = profiler().run(opts, log=lambda *a: None)
    assert path == os.path.join(bundle, "profile.json") and os.path.isfile(png) and os.path.getsize(png) > 10000
    with open(path) as f:
        disk = json.load(f)
    assert disk["schema"] == "dynn-profile" and disk["schema_version"] == 1
    threads = sorted(set([1, min(2, len(os.sched_getaffinity(0)))]))
    pts = disk["points"]
    assert len(pts) == 3 * len(threads)
    assert sorted((p["level"], p["threads"]) for p in pts) == sorted((k, t) for k in (1, 2, 3) for t in threads)
    for p in pts:
        assert p["backend"] == "tflite" and p["cpu_freq_khz"] is None and p["gpu_freq_hz"] is None
        lat = p["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["max"] and lat["median"] <= lat["p95_all"] and lat["n"] == 15
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
        assert mgr.level == 3


def test_profile_on_a_fake_xu3_sweeps_clusters_and_frequencies_and_restores_them(bundle, tmp_path):
    root = str(tmp_path / "xu3")
    make_xu3(root)
    cpus = sorted(os.sched_getaffinity(0))
    board = board_file(tmp_path, "odroid-xu3", [
        {"name": "a7", "aliases": ["little"], "core": "Cortex-A7", "cpus": cpus[:1], "policy_candidates": [XU3_A7]},
        {"name": "a15", "aliases": ["big"], "core": "Cortex-A15", "cpus": cpus[-1:], "policy_candidates": [XU3_A15]}])

    def snapshot():
        out = {}
        for d in (XU3_A7, XU3_A15):
            for name in os.listdir(os.path.join(root, d)):
                with open(os.path.join(root, d, name)) as f:
                    out[d + "/" + name] = f.read().strip()
        return out

    before, affinity = snapshot(), os.sched_getaffinity(0)
    out = str(tmp_path / "xu3-profile.json")
    opts = options(bundle, out=out, runs=10, freqs="2", threads="1", levels="1,2", energy_s=0.3, board=board,
                   sysfs_root=root, state_dir=str(tmp_path / "state"))
    prof, path, png = profiler().run(opts, log=lambda *a: None)
    assert snapshot() == before and os.sched_getaffinity(0) == affinity
    assert path == out and os.path.isfile(png)
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
    prof, path, png = profiler().run(options(bundle, no_plot=True), log=lambda *a: None)
    assert png is None and not os.path.exists(os.path.join(bundle, "profile.png"))
    res = run_cli(["build.py", "profile", bundle])
    assert res.returncode == 0, res.stderr
    assert os.path.isfile(os.path.join(bundle, "profile.png")) and "latency front" in res.stdout

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
    assert res.returncode == 1 and "board_scripts/profile.py" in res.stderr and len(res.stderr.splitlines()) == 1


def test_profile_script_runs_with_the_runtime_only(bundle, tmp_path):
    out = str(tmp_path / "p.json")
    code = ("import runpy, sys\n"
            "for mod in ('torch', 'onnx', 'compile', 'matplotlib'): sys.modules[mod] = None\n"
            "sys.argv = ['profile.py', %r, '--quick', '--runs', '10', '--out', %r]\n"
            "runpy.run_path(%r, run_name='__main__')\n" % (bundle, out, os.path.join(ROOT, "board_scripts", "profile.py")))
    res = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert os.path.isfile(out) and "matplotlib is not installed here" in res.stdout
    assert not os.path.exists(str(tmp_path / "p.png"))


def test_profile_script_errors_are_one_line(tmp_path):
    res = run_cli(["board_scripts/profile.py", str(tmp_path / "missing")])
    assert res.returncode == 1 and res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1


def test_profile_script_is_python_3_6_compatible():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    res = subprocess.run([vermin, "-q", "--no-tips", "-t=3.6-", "--violations", "--eval-annotations",
                          os.path.join(ROOT, "board_scripts", "profile.py")], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True)
    assert res.stdout.strip() == "", res.stdout
