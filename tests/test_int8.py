"""Integer levels (issue 13): int8 signatures beside the float ones in one file, precision as a knob of the
operating point, golden vectors per precision."""
import json
import os

import numpy as np
import pytest

from conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def both_bundle(tiny_ckpt, tiny_data, tmp_path_factory):
    from compile.bundle import build_bundle
    out = str(tmp_path_factory.mktemp("int8") / "host-cpu")
    build_bundle(tiny_ckpt, "host-cpu", out, data_dir=tiny_data, log=lambda *a: None, precision="both")
    return out


def _man(d):
    return json.load(open(os.path.join(d, "manifest.json")))


def test_both_precisions_live_in_one_file_with_int8_signatures_per_group_and_batch(both_bundle, host_bundle):
    man, tfl = _man(both_bundle), _man(both_bundle)["engines"]["tflite"]
    assert tfl["precisions"] == ["fp32", "int8"]
    groups, sizes = man["model"]["groups"], tfl["batch_sizes"]
    int8 = {s for s, i in tfl["signatures"].items() if i.get("precision") == "int8"}
    assert int8 == {"group%d_b%d_int8" % (g, b) for g in range(1, groups + 1) for b in sizes}
    cal = tfl["calibration"]
    assert cal["split"] == "train" and cal["images"] == 256 and cal["seed"] == 0 and len(cal["indices_sha256"]) == 64
    # int8 weights are stored once per precision: the float file plus at most a third of it
    fp32_size = _man(host_bundle)["files"]["model.tflite"]["size"]
    assert fp32_size < man["files"]["model.tflite"]["size"] <= 1.35 * fp32_size


def test_precision_switches_through_the_operating_point_and_int8_stays_close_to_float(both_bundle):
    import runtime
    from runtime.errors import RuntimeUserError
    g = np.load(os.path.join(both_bundle, "golden.npz"))
    with runtime.load(both_bundle) as m:
        assert m.precisions == ["fp32", "int8"] and m.precision == "fp32"
        f = m.infer(g["input"], 3)
        m.set_operating_point(precision="int8")
        assert m.precision == "int8"
        q = m.infer(g["input"], 3)
        np.testing.assert_allclose(q, g["int8_level3"], atol=_man(both_bundle)["golden"]["int8"]["atol"][2])
        assert not np.array_equal(q, f)  # really another engine, not the float one relabelled
        assert (q.argmax(1) == f.argmax(1)).mean() >= 0.75
        with pytest.raises(RuntimeUserError, match="precision 'int4' is not carried"):
            m.set_operating_point(precision="int4")
        assert m.precision == "int8"  # a refused switch changes nothing
        m.set_operating_point(level=1, precision="fp32")
        np.testing.assert_allclose(m.infer(g["input"]), g["level1"], atol=1e-4)


def test_a_float_only_bundle_refuses_int8_in_one_line(host_bundle):
    import runtime
    from runtime.errors import RuntimeUserError
    with runtime.load(host_bundle) as m:
        assert m.precisions == ["fp32"]
        with pytest.raises(RuntimeUserError, match="--precision both"):
            m.set_operating_point(precision="int8")


def test_verify_checks_every_precision_against_its_own_golden_logits(both_bundle, tmp_path):
    res = run_cli(["-m", "runtime", "verify", both_bundle])
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(" int8 ") >= 3 and "PASSED" in res.stdout
    # a golden file whose int8 logits are off by more than the stated tolerance fails verification
    import shutil
    bad = str(tmp_path / "bad")
    shutil.copytree(both_bundle, bad)
    g = dict(np.load(os.path.join(bad, "golden.npz")))
    g["int8_level2"] = g["int8_level2"] + 1.0
    np.savez(os.path.join(bad, "golden.npz"), **g)
    man = _man(bad)
    from runtime.bundle import sha256_file
    man["files"]["golden.npz"] = {"size": os.path.getsize(os.path.join(bad, "golden.npz")),
                                  "sha256": sha256_file(os.path.join(bad, "golden.npz"))}
    json.dump(man, open(os.path.join(bad, "manifest.json"), "w"))
    res = run_cli(["-m", "runtime", "verify", bad])
    assert res.returncode == 1 and "MISMATCH" in res.stdout and "FAILED" in res.stdout


def test_an_int8_engine_without_its_golden_tolerances_is_refused(both_bundle, tmp_path):
    import shutil
    import runtime
    from runtime.errors import RuntimeUserError
    bad = str(tmp_path / "b")
    shutil.copytree(both_bundle, bad)
    man = _man(bad)
    del man["golden"]["int8"]
    json.dump(man, open(os.path.join(bad, "manifest.json"), "w"))
    with pytest.raises(RuntimeUserError, match="golden.int8"):
        runtime.load(bad)


def test_the_int8_file_loads_on_the_oldest_runtime_the_target_promises(both_bundle):
    """tflite-runtime 2.14 (numpy < 2) in its own venv, as the old-runtime test of the float file does."""
    py = os.path.join(ROOT, ".venv-tflite", "bin", "python")
    if not os.path.exists(py):
        pytest.skip("no .venv-tflite (make test builds it)")
    code = ("import runtime, numpy as np, sys; m = runtime.load(sys.argv[1]); g = np.load(sys.argv[1] + '/golden.npz');"
            "m.set_operating_point(precision='int8'); "
            "print(max(float(np.abs(m.infer(g['input'], k) - g['int8_level%d' % k]).max()) for k in m.levels))")
    import subprocess
    res = subprocess.run([py, "-c", code, both_bundle], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    worst = float(res.stdout.strip().splitlines()[-1])
    assert worst <= min(_man(both_bundle)["golden"]["int8"]["atol"])


def test_the_profiler_sweeps_precision_and_the_manager_switches_to_int8_where_the_profile_says_it_pays(both_bundle):
    """Here int8 is slower (AVX2, no VNNI); on a board where the profile shows it faster, the manager takes it."""
    import runtime
    from runtime import profile_schema as ps
    from runtime.manager import Manager
    from runtime.profiler import measure, options, fill_defaults
    opts = fill_defaults(options(both_bundle, quick=True, threads="1", levels="1,2", runs=10, warmup=1,
                                 rounds=1, placements=0))
    prof = measure(both_bundle, opts, log=lambda *a: None)
    man = _man(both_bundle)
    by = {(p["level"], ps.precision(p)): p for p in prof["points"]}
    assert set(by) == {(1, "fp32"), (2, "fp32"), (1, "int8"), (2, "int8")}
    for k in (1, 2):
        assert by[(k, "int8")]["accuracy"] == man["levels"][k - 1]["test_accuracy_int8"]
        assert by[(k, "fp32")]["accuracy"] == man["levels"][k - 1]["test_accuracy"]
    assert ps.label(by[(2, "int8")]).endswith("int8")
    # a board where int8 runs in a third of float32's time (set from the float32 points, not from this host's
    # timings, which a busy machine can invert): level 2 int8 meets a budget level 2 float32 misses
    for p in prof["points"]:
        if ps.precision(p) == "int8":
            for key in ("median", "p95"):
                p["latency_ms"][key] = by[(p["level"], "fp32")]["latency_ms"][key] / 3.0
    prof.update(ps.summarize(prof["points"]))
    budget = by[(2, "int8")]["latency_ms"]["p95"] * 1.2
    assert by[(2, "fp32")]["latency_ms"]["p95"] > budget
    with runtime.load(both_bundle) as m:
        mgr = Manager(m, prof, power_reader=None)
        mgr.set_budget(latency_ms=budget)
        x = np.load(os.path.join(both_bundle, "golden.npz"))["input"][:1]
        mgr.infer(x)
        chosen = mgr.point
        assert (chosen["level"], ps.precision(chosen)) == (2, "int8") and m.precision == "int8"


def test_the_onnx_peer_carries_int8_levels_verified_against_their_own_golden_logits(both_bundle):
    """model_int8.onnx: each group quantized by onnxruntime's quantize_static (QDQ), composed like the float graph."""
    import onnx
    import runtime
    man = _man(both_bundle)
    eng = man["engines"]["onnx"]
    assert eng["precisions"] == ["fp32", "int8"] and eng["int8"]["file"] in man["files"]
    ops = {n.op_type for n in onnx.load(os.path.join(both_bundle, eng["int8"]["file"])).graph.node}
    ops |= {n.op_type for n in onnx.load(os.path.join(both_bundle, eng["int8"]["file"])).graph.node
            for a in n.attribute if a.HasField("g") for n in a.g.node}
    assert {"QuantizeLinear", "DequantizeLinear", "If"} <= ops
    with runtime.load(both_bundle, backend="onnx", threads=1) as m:
        assert m.precisions == ["fp32", "int8"]
        g = dict(np.load(os.path.join(both_bundle, "golden.npz")))
        m.set_operating_point(precision="int8")
        for k in m.levels:
            np.testing.assert_allclose(m.infer(g["input"], k), g["onnx_int8_level%d" % k],
                                       atol=man["golden"]["onnx_int8"]["atol"][k - 1], rtol=0)
            assert m.accuracy_of(k, "int8") == eng["int8"]["test_accuracy"][k - 1]
        m.set_operating_point(precision="fp32")
        np.testing.assert_allclose(m.infer(g["input"], 2), g["level2"], atol=1e-4, rtol=1e-4)
    res = run_cli(["-m", "runtime", "verify", both_bundle, "--backend", "onnx"])
    assert res.returncode == 0 and res.stdout.count(" int8 ") >= 3 and "PASSED" in res.stdout, res.stdout + res.stderr
