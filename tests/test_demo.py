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


class _Recorder(object):
    precisions = ["fp32", "int8"]

    def __init__(self):
        self.calls = []

    def set_operating_point(self, **kw):
        self.calls.append(kw)

    def infer(self, x):
        return x


SPLIT_INT8 = {"level": 4, "threads": None, "pe": "cpu:0+cpu:1", "cluster": None, "precision": "int8",
              "placement": {"cpu:0": {"groups": [4], "engine": "tflite", "threads": 1},
                            "cpu:1": {"groups": [1, 2, 3], "engine": "tflite", "threads": 1}}}


def test_the_fixed_model_and_the_budget_anchor_run_the_whole_profile_point():
    """A split int8 top point is measured as that point, not as its level on the default engine at float32."""
    from bench.demo_run import FixedRunner, measure_p95
    m = _Recorder()
    FixedRunner(m, SPLIT_INT8)
    measure_p95(m, dict(SPLIT_INT8, threads=2, placement=None, precision=None, pe="cpu"), None, seconds=0.0)
    assert m.calls == [{"level": 4, "precision": "int8", "placement": SPLIT_INT8["placement"]},
                       {"level": 4, "threads": 2, "precision": "fp32"}]


def test_point_kwargs_moves_only_what_changes_and_applies_a_point_whole_from_nowhere():
    from runtime.profile_schema import point_kwargs
    one_pe = {"level": 2, "threads": 2, "pe": "cpu", "cluster": "cpu", "cpu_freq_khz": None}
    assert point_kwargs(one_pe, None, ["fp32"], pin=False) == {"level": 2, "threads": 2}
    assert point_kwargs(one_pe, None, ["fp32"], pin=True) == {"level": 2, "threads": 2, "cluster": "cpu"}
    assert point_kwargs(dict(one_pe, level=3), one_pe, ["fp32"], pin=True) == {"level": 3}
    # to a split: the level and placement change; back: placement None runs the level on one PE again
    assert point_kwargs(SPLIT_INT8, one_pe, ["fp32", "int8"], pin=False) == {
        "level": 4, "precision": "int8", "placement": SPLIT_INT8["placement"]}
    assert point_kwargs(dict(one_pe, level=4), SPLIT_INT8, ["fp32", "int8"], pin=False) == {
        "threads": 2, "precision": "fp32", "placement": None}
    # an engine with one precision is never asked to switch
    assert "precision" not in point_kwargs(SPLIT_INT8, None, ["fp32"], pin=False)
    assert "precision" not in point_kwargs(SPLIT_INT8, None, None, pin=False)
