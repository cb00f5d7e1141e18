"""`build.py demo` smoke run: a few seconds, a tiny generated data set; outputs exist, the load is gone."""
import json
import os
import shutil

from conftest import make_cifar_like, run_cli


def test_demo_smoke_run_writes_its_outputs_and_leaves_no_load_behind(host_bundle, tmp_path):
    bundle = str(tmp_path / "host-cpu")
    shutil.copytree(host_bundle, bundle)  # the demo writes a quick profile into the bundle
    data = make_cifar_like(str(tmp_path / "data"), n_train=16, n_test=64)
    out = str(tmp_path / "demo-out")
    res = run_cli(["build.py", "demo", "--bundle", bundle, "--data", data, "--duration", "2", "--quick",
                   "--out", out, "--load-workers", "1", "--interval", "0.5"], timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert any(l.strip().startswith("[manager") and "budget" in l and "acc so far" in l for l in lines)
    assert any(l.startswith("criterion") for l in lines) and any("manager decision: mean" in l for l in lines)
    assert os.path.isfile(os.path.join(bundle, "profile.json"))
    assert os.path.getsize(os.path.join(out, "timeline.png")) > 10000
    with open(os.path.join(out, "demo.json")) as f:
        doc = json.load(f)
    assert set(doc["phases"]) == {"manager", "fixed"}
    for name, phase in doc["phases"].items():
        assert phase["all"]["n"] > 0 and 0 <= phase["all"]["hit_rate"] <= 1 and 0 <= phase["all"]["accuracy"] <= 1
        info = doc["load"][name]
        assert info["start_s"] is not None and info["gone"] is True
        try:
            os.killpg(info["pgid"], 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive, "the load generator's process group is gone"
    with open(os.path.join(bundle, "profile.json")) as f:
        prof = json.load(f)
    # the manager's ladder is the profile's own p95 front: one front implementation for both
    assert doc["decision"]["calls"] == 5000 and doc["decision"]["ladder"] == len(prof["fronts"]["latency_p95"])
    assert "passed" in doc["criterion"]


def test_demo_without_data_says_which_flag_to_give(host_bundle, tmp_path):
    res = run_cli(["build.py", "demo", "--bundle", host_bundle, "--data", str(tmp_path / "nothing"), "--quick"])
    assert res.returncode == 1 and res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1
    assert "--data" in res.stderr and "python build.py train --data DIR" in res.stderr
    assert "shared" not in res.stderr, "no path outside this repository"
    res = run_cli(["build.py", "demo", "--bundle", host_bundle, "--budget-ms", "fast", "--data", str(tmp_path)])
    assert res.returncode == 1 and "--budget-ms" in res.stderr and len(res.stderr.splitlines()) == 1


def test_demo_can_leave_the_profiles_placements_out_of_the_managers_choice(host_bundle, tmp_path):
    """--no-placements: the manager chooses among single-PE points only (issue 14: with vs without splits)."""
    bundle = str(tmp_path / "host-cpu")
    shutil.copytree(host_bundle, bundle)
    data = make_cifar_like(str(tmp_path / "data"), n_train=16, n_test=64)
    out = str(tmp_path / "demo-out")
    res = run_cli(["build.py", "demo", "--bundle", bundle, "--data", data, "--duration", "1", "--quick", "--no-fixed",
                   "--out", out, "--load-workers", "1", "--interval", "0.5", "--no-placements"], timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    with open(os.path.join(bundle, "profile.json")) as f:
        prof = json.load(f)
    kept = sum(1 for p in prof["points"] if not p.get("placement"))
    assert "placements left out of the profile (--no-placements): %d points remain" % kept in res.stdout
    with open(os.path.join(out, "demo.json")) as f:
        doc = json.load(f)
    assert doc["settings"]["placements"] is False
    assert "cpu:0+cpu:1" not in res.stdout.split("p95 latency front:")[1].splitlines()[0]
