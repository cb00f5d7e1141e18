"""`python build.py bench`: the quick (smoke) mode end to end on the tiny bundle, and the arithmetic it relies on.

A benchmark, not a test of speed: nothing here asserts a timing, only that every section is measured and reported.
"""
import argparse
import json
import os
import shutil

import pytest

from bench import add_arguments
from bench.manager import decision_cost, demo_result
from bench.refs import _cached
from bench.run import _threads, command_line
from bench.stats import ideal_latencies, latency_front, paired_ratios, ratio, summarize
from compile.errors import UserError
from conftest import run_cli


# ---- the smoke run ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_out(tiny_ckpt, host_bundle, tmp_path_factory):
    import build
    d = tmp_path_factory.mktemp("bench")
    static = d / "static"
    # one static width on record, the others not trained yet: reported as partial, not an error
    os.makedirs(str(static / "width-1"))
    with open(os.path.splitext(tiny_ckpt)[0] + ".json") as f:
        meta = json.load(f)
    meta.update(groups=1, levels=[dict(meta["levels"][0], test_accuracy=0.5)], static_width=1, scheme="static")
    for key in ("level_scale", "group_widths", "level_weights"):  # per-group lists: one group's worth
        if key in meta:
            meta[key] = meta[key][:1]
    with open(str(static / "width-1" / "model.json"), "w") as f:
        json.dump(meta, f)
    with open(str(d / "demo.json"), "w") as f:
        json.dump({"phases": {"manager": {"all": {"hit_rate": 0.97}, "load_settled": {"hit_rate": 0.96}},
                              "fixed": {"all": {"hit_rate": 0.7}, "load_settled": {"hit_rate": 0.4}}},
                   "criterion": {"min_hit_rate": 0.95, "passed": True}, "settings": {"budget_hi_ms": 2.0},
                   "decision": {"mean_us": 3.0, "p50_us": 2.5, "p99_us": 9.0, "calls": 100, "ladder": 4}}, f)
    out = d / "out"
    rc = build.main(["bench", "--quick", "--threads", "1", "--checkpoint", tiny_ckpt, "--bundle", host_bundle,
                     "--out", str(out), "--dense", str(d / "no-dense"), "--static-dir", str(static),
                     "--demo", str(d / "demo.json")])
    assert rc == 0
    with open(str(out / "bench.json")) as f:
        return str(out), json.load(f)


def test_quick_mode_measures_every_section(bench_out):
    out, res = bench_out
    assert res["schema"] == "dynn-bench" and res["mode"] == "quick"
    assert res["command"].startswith("python build.py bench") and "--quick" in res["command"]
    assert res["machine"]["cores_usable"] >= 1 and res["machine"]["versions"]["torch"]
    (cfg,) = res["latency"]
    assert (cfg["threads"], cfg["batch"]) == (1, 1)
    assert [r["level"] for r in cfg["levels"]] == [1, 2, 3]
    for r in cfg["levels"]:
        for impl in ("engine", "single", "onnxruntime", "pytorch"):
            assert r[impl]["median"] > 0 and r[impl]["p10"] <= r[impl]["median"] <= r[impl]["p90"]
        assert r["engine_vs_single"]["median"] > 0 and r["pytorch_vs_engine"]["median"] > 0
        assert r.get("dense") is None
    assert cfg["dynamic_range"] > 1 and cfg["ideal_range"] == pytest.approx(3.0)
    ag = res["agreement_max_abs"]["t1_b1"]
    assert ag["single"] < 1e-4 and ag["onnxruntime"] < 1e-4

    sw = res["switching"]
    assert sw["set_level"]["median"] > 0 and sw["ratio_open_vs_set_level"] > 1

    mem = res["memory"]
    assert set(mem["rss_bytes"]) == {"engine", "full", "per_level"}
    assert mem["rss_ratio"]["full"] > 0 and mem["limit"] == 1.15 and isinstance(mem["within_limit"], bool)
    assert mem["file_bytes"]["per_level"] > mem["file_bytes"]["full"]

    (pk,) = res["peak"]
    assert pk["peak_macs_per_s"] > 0 and 0 < pk["achieved"][0]["fraction"]
    # the peak is the faster of the BLAS GEMM and the engine's own FULLY_CONNECTED, both measured
    assert len(pk["gemms"]) == 2 and any(k.startswith("XNNPACK") for k in pk["gemms"])
    assert pk["peak_macs_per_s"] == max(g["max"] for g in pk["gemms"].values())

    acc = res["accuracy"]
    assert [v["level"] for v in acc["grouped"]["levels"]] == [1, 2, 3]
    assert acc["dense"]["status"].startswith("missing")
    assert acc["static"]["status"] == "partial" and [v["level"] for v in acc["static"]["levels"]] == [1]
    assert [m["width"] for m in acc["static"]["missing"]] == [2, 3]

    demo = res["manager"]["demo"]
    assert demo["hit_rates"] == {"fixed.all": 0.7, "fixed.load_settled": 0.4, "manager.all": 0.97,
                                 "manager.load_settled": 0.96} and demo["passed"] is True
    # the bundle has no profile.json: the decision cost is the one the demo measured, and says so
    cost = res["manager"]["decision_cost"]
    assert cost["status"] == "ok" and cost["p50_us"] == 2.5 and "demo" in cost["source"]
    assert {c["name"].split(":")[0] for c in res["checks"]} >= {"memory", "cost of being dynamic"}
    assert "--data" in res["precision"]["skipped"]  # int8 needs calibration images: no guessing without data


def test_int8_checks_hold_the_issue_goals_against_measured_numbers():
    from bench.precision import checks
    q = {"accuracy": [{"level": 1, "drop_points": 0.2}, {"level": 2, "drop_points": 1.3}], "file_ratio": 0.28,
         "batches": {"1": {"int8_range_vs_ideal": 0.95}, "32": {"int8_range_vs_ideal": 0.85}},
         "memory": {"rss_ratio": 1.12}}
    got = {c["name"]: c["ok"] for c in checks(q)}
    assert got == {"int8: every level within 1 point of its float32 accuracy": False,
                   "int8 file <= 0.30x the float32 file": True,
                   "int8: RSS with every int8 level ready <= 1.10x the full int8 level alone": False,
                   "int8 latency ladder at batch 1 >= 0.9 of the MAC ratio": True,
                   "int8 latency ladder at batch 32 >= 0.9 of the MAC ratio": False}
    assert checks({"skipped": "no data"}) == []


def test_quick_mode_writes_the_report_and_plots(bench_out):
    out, res = bench_out
    for name in res["plots"]:
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "report.md")) as f:
        md = f.read()
    for heading in ("## Summary", "Latency ladder", "## 3. Switching", "## 4. Memory", "## 6. Distance",
                    "## 7. Accuracy ladder", "## 8. Manager", "## How these numbers were made"):
        assert heading in md
    for name in res["plots"]:
        assert "(%s)" % name in md
    assert res["command"] in md and res["machine"]["cpu"] in md
    assert "static width 2: missing" in md and "Quick (smoke) mode" in md
    assert "manager during the load 96.00%" in md


def test_a_tampered_bundle_is_one_line_before_anything_is_measured(tiny_ckpt, host_bundle, tmp_path):
    bundle = str(tmp_path / "tampered")
    shutil.copytree(host_bundle, bundle)
    with open(os.path.join(bundle, "model.tflite"), "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xfe")
    out = str(tmp_path / "out")
    res = run_cli(["build.py", "bench", "--quick", "--threads", "1", "--checkpoint", tiny_ckpt, "--bundle", bundle,
                   "--out", out], timeout=300)
    lines = [l for l in res.stderr.splitlines() if l.startswith(("error", "Traceback"))]
    assert res.returncode == 1 and len(lines) == 1 and "model.tflite" in lines[0] and "checksum" in lines[0], \
        res.stderr
    assert not os.path.exists(os.path.join(out, "bench.json"))


def test_a_bundle_from_another_checkpoint_is_refused(host_bundle, tmp_path):
    from bench.run import _bundle
    args = argparse.Namespace(bundle=host_bundle)
    with pytest.raises(UserError, match="was not built from"):
        _bundle(args, {"name": "host-cpu"}, "x.safetensors", {"tensors": {"sha256": "0" * 64}}, str(tmp_path),
                lambda *a: None)


# ---- pure logic -------------------------------------------------------------------------------------------

def test_summary_uses_linear_percentiles():
    s = summarize([0.0, 10.0])
    assert s["p10"] == pytest.approx(1.0) and s["median"] == 5.0 and s["p90"] == pytest.approx(9.0)
    assert summarize([4.0, 1.0, 3.0, 2.0])["median"] == 2.5
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0 and s["n"] == 5 and s["min"] == 1.0 and s["max"] == 100.0
    assert s["p10"] < s["median"] < s["p90"] and s["iqr"] == pytest.approx(2.0)
    assert summarize([]) is None


def test_ratios_are_paired_per_round_and_missing_values_give_none():
    assert ratio(2.0, 1.0) == 2.0 and ratio(None, 1.0) is None and ratio(1.0, 0) is None
    # the machine slows down in round 2: per-round ratios stay 2.0, a ratio of medians would not see the pairing
    s = paired_ratios([2.0, 20.0, 2.2], [1.0, 10.0, 1.1])
    assert s["median"] == pytest.approx(2.0) and s["max"] == pytest.approx(2.0)


def test_pareto_front_keeps_only_undominated_points_with_one_tie_rule():
    pts = [(1.0, 0.80, "a"), (2.0, 0.85, "b"), (2.5, 0.84, "c"), (3.0, 0.90, "d"), (3.0, 0.88, "e"),
           (1.0, 0.79, "f")]
    assert [p[2] for p in latency_front(pts)] == ["a", "b", "d"]
    assert latency_front([]) == []
    # of points equal in both, the first stays: the benchmark, the profile and the manager agree on a front
    assert [p[2] for p in latency_front([(1.0, 0.5, "x"), (1.0, 0.5, "y")])] == ["x"]
    assert [p[2] for p in latency_front([(2.0, 0.9, "slow"), (1.0, 0.9, "fast")])] == ["fast"]


def test_ideal_latency_scales_level_one_by_the_macs():
    assert ideal_latencies(0.2, [10, 20, 40]) == pytest.approx([0.2, 0.4, 0.8])
    assert ideal_latencies(None, [1, 2]) == [None, None]


def test_reference_cache_reuses_files_with_more_batch_sizes(tmp_path):
    d = str(tmp_path)
    assert _cached(d, "level2", [1]) is None
    open(os.path.join(d, "level2_b1-32.tflite"), "w").close()
    open(os.path.join(d, "level12_b1.tflite"), "w").close()
    assert _cached(d, "level2", [1]).endswith("level2_b1-32.tflite")
    assert _cached(d, "level2", [1, 32]).endswith("level2_b1-32.tflite")
    assert _cached(d, "level2", [8]) is None
    assert _cached(d, "level1", [1]) is None


def test_command_line_and_thread_options():
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert command_line(p.parse_args([])) == "python build.py bench"
    assert command_line(p.parse_args(["--quick", "--threads", "1,2"])) == "python build.py bench --threads 1,2 --quick"
    assert _threads(None, 4) == [1, 4] and _threads(None, 1) == [1] and _threads("2,1,2", 8) == [1, 2]
    with pytest.raises(UserError, match="comma-separated"):
        _threads("one", 2)
    with pytest.raises(UserError, match="positive"):
        _threads("0", 2)


def test_manager_numbers_say_why_they_are_absent(host_bundle, tmp_path):
    r = demo_result(str(tmp_path / "nothing"))
    assert r["status"] == "not run" and "python build.py demo" in r["note"]
    cost = decision_cost([str(tmp_path)])
    assert cost["status"] == "skipped" and "python build.py profile" in cost["note"]
    bundle = str(tmp_path / "bundle")
    shutil.copytree(host_bundle, bundle)
    with open(os.path.join(bundle, "profile.json"), "w") as f:
        f.write("[]")
    cost = decision_cost([bundle])
    assert cost["status"] == "failed" and "JSON object" in cost["note"]
    with open(str(tmp_path / "demo.json"), "w") as f:
        f.write("{broken")
    assert demo_result(str(tmp_path))["status"] == "unreadable"
