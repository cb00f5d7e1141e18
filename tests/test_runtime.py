import ast
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli
from fake_sysfs import NANO_POLICY, board_file, make_nano, make_xu3, read
from runtime import RuntimeUserError, load
from runtime.bundle import load_golden


@pytest.mark.parametrize("backend", ["tflite", "onnx"])
def test_golden_vectors_reproduce_at_every_level(host_bundle, backend):
    with load(host_bundle, backend=backend, threads=1) as m:
        assert m.levels == [1, 2, 3] and m.backend.name == backend
        g = load_golden(m.bundle_dir, m.manifest)
        np.testing.assert_allclose(m.preprocess(g["images"]), g["input"], atol=1e-5)
        for k in m.levels:
            m.set_level(k)
            np.testing.assert_allclose(m.infer(g["input"]), g["level%d" % k], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n", [1, 3, 32, 45])
def test_any_batch_size_is_served_from_the_carried_ones(host_bundle, n):
    x = np.random.default_rng(n).standard_normal((n, 3, 32, 32)).astype(np.float32)
    with load(host_bundle, backend="tflite", threads=1) as m:
        m.set_level(2)
        one_by_one = np.concatenate([m.infer(x[i:i + 1]) for i in range(n)])
        np.testing.assert_allclose(m.infer(x), one_by_one, atol=1e-5)


def test_switching_levels_in_any_order_gives_each_levels_golden_result(host_bundle):
    with load(host_bundle, threads=1) as m:
        g = load_golden(m.bundle_dir, m.manifest)
        order = list(reversed(m.levels)) + m.levels
        outs = {}
        for k in order:
            m.set_level(k)
            outs[k] = m.infer(g["input"])
            np.testing.assert_allclose(outs[k], g["level%d" % k], atol=1e-4, rtol=1e-4)
        assert not np.allclose(outs[m.levels[0]], outs[m.levels[-1]])


def test_run_cli_times_every_level_or_the_one_asked_for(host_bundle):
    res = run_cli(["-m", "runtime", "run", host_bundle, "--threads", "1", "--runs", "5", "--batch", "3"])
    assert res.returncode == 0, res.stderr
    rows = [ln.split() for ln in res.stdout.splitlines()[1:]]
    levels = json.load(open(os.path.join(host_bundle, "manifest.json")))["levels"]
    assert [int(r[0]) for r in rows] == [lv["level"] for lv in levels]
    # level, MMACs and recorded accuracy from the manifest, then median and p95 measured here
    assert [float(r[1]) for r in rows] == [round(lv["macs"] / 1e6, 2) for lv in levels]
    assert [r[2] for r in rows] == ["%.2f%%" % (100 * lv["test_accuracy"]) for lv in levels]
    assert all(float(r[3]) > 0 and float(r[4]) >= float(r[3]) for r in rows)
    assert "(batch 3, 5 runs, backend tflite)" in res.stdout
    res = run_cli(["-m", "runtime", "run", host_bundle, "--threads", "1", "--runs", "2", "--level", "2"])
    assert res.returncode == 0 and [ln.split()[0] for ln in res.stdout.splitlines()[1:]] == ["2"], res.stderr


def test_info_cli_lists_levels_and_shows_unknown_accuracy_as_a_dash(host_bundle, tmp_path):
    b = str(tmp_path / "b")
    shutil.copytree(host_bundle, b)
    man = json.load(open(os.path.join(b, "manifest.json")))
    man["levels"][0]["test_accuracy"] = None
    json.dump(man, open(os.path.join(b, "manifest.json"), "w"))
    res = run_cli(["-m", "runtime", "info", b])
    assert res.returncode == 0, res.stderr
    table = [ln.split() for ln in res.stdout.splitlines() if ln[:1].isdigit()]
    assert [r[0] for r in table] == [str(lv["level"]) for lv in man["levels"]] and table[0][-1] == "-"
    assert "%d groups" % man["model"]["groups"] in res.stdout


def test_bad_input_gets_errors_that_say_what_was_expected(host_bundle):
    with load(host_bundle, threads=1) as m:
        with pytest.raises(RuntimeUserError, match=r"float32 array \[N, 3, 32, 32\]"):
            m.infer(np.zeros((1, 32, 32, 3), np.float32))
        with pytest.raises(RuntimeUserError, match="float32"):
            m.infer(np.zeros((1, 3, 32, 32), np.float64))
        with pytest.raises(RuntimeUserError, match=r"levels \[1, 2, 3\]"):
            m.set_level(7)
        with pytest.raises(RuntimeUserError, match="uint8 images of shape"):
            m.preprocess(np.zeros((1, 3, 32, 32), np.uint8))


def test_tampered_bundle_fails_its_checksum_with_the_file_named(host_bundle, tmp_path):
    b = str(tmp_path / "b")
    shutil.copytree(host_bundle, b)
    with open(os.path.join(b, "model.tflite"), "r+b") as f:
        f.seek(5000)
        f.write(b"\0\1\2\3")
    with pytest.raises(RuntimeUserError, match="model.tflite .* fails its checksum"):
        load(b)
    res = run_cli(["-m", "runtime", "verify", b])
    assert res.returncode == 1 and "fails its checksum" in res.stderr


def test_bundle_for_another_target_or_board_is_refused(host_bundle, tmp_path):
    with pytest.raises(RuntimeUserError, match="built for target host-cpu, not xu3"):
        load(host_bundle, target="xu3")
    b = str(tmp_path / "b")
    shutil.copytree(host_bundle, b)
    man = json.load(open(os.path.join(b, "manifest.json")))
    man["target"]["board"] = "jetson-nano"
    json.dump(man, open(os.path.join(b, "manifest.json"), "w"))
    root = tmp_path / "xu3"
    make_xu3(root)
    with pytest.raises(RuntimeUserError, match="board jetson-nano.*this board is odroid-xu3"):
        load(b, sysfs_root=str(root))


def test_verify_cli_passes_on_a_good_bundle(host_bundle):
    res = run_cli(["-m", "runtime", "verify", host_bundle, "--threads", "1"])
    assert res.returncode == 0, res.stderr
    assert "verify: PASSED" in res.stdout and res.stdout.count(" ok") == 4


def test_operating_point_sets_level_affinity_and_clock_and_close_restores(host_bundle, tmp_path):
    root = tmp_path / "nano"
    make_nano(root)
    cpus = sorted(os.sched_getaffinity(0))
    board = board_file(tmp_path, "jetson-nano", [
        {"name": "a57", "aliases": ["big"], "cpus": cpus[:1], "policy_candidates": [NANO_POLICY]}])
    before = read(str(root), NANO_POLICY + "/scaling_max_freq")
    original_affinity = os.sched_getaffinity(0)
    m = load(host_bundle, threads=2, board=board, sysfs_root=str(root), state_dir=str(tmp_path / "state"))
    m.set_operating_point(level=2, cluster="big", cpu_freq_khz=921600)
    assert m.level == 2 and os.sched_getaffinity(0) == set(cpus[:1]) and m.backend.threads == 1
    assert read(str(root), NANO_POLICY + "/scaling_max_freq") == "921600"
    m.infer(np.zeros((1, 3, 32, 32), np.float32))
    m.close()
    assert read(str(root), NANO_POLICY + "/scaling_max_freq") == before
    assert os.sched_getaffinity(0) == original_affinity


def test_runtime_runs_with_torch_onnx_and_compile_unimportable(host_bundle):
    code = ("import sys\n"
            "for mod in ('torch', 'onnx', 'compile'): sys.modules[mod] = None\n"
            "sys.path.insert(0, %r)\n"
            "from runtime.__main__ import main\n"
            "sys.exit(main(['verify', %r, '--threads', '1']))\n" % (ROOT, host_bundle))
    res = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert res.returncode == 0, res.stderr
    assert "verify: PASSED" in res.stdout


def test_runtime_source_never_imports_torch_onnx_or_compile():
    for path in glob.glob(os.path.join(ROOT, "runtime", "**", "*.py"), recursive=True):
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for n in names:
                assert n.split(".")[0] not in ("torch", "onnx", "compile"), (path, n)


def test_runtime_is_python_3_6_compatible():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    res = subprocess.run([vermin, "-q", "--no-tips", "-t=3.6-", "--violations", "--eval-annotations",
                          os.path.join(ROOT, "runtime")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    assert res.stdout.strip() == "", res.stdout


def test_bundle_loads_and_verifies_with_tflite_runtime_2_14(host_bundle):
    py = os.path.join(ROOT, ".venv-tflite", "bin", "python")
    if not os.path.exists(py):
        if os.environ.get("CI"):
            pytest.fail(".venv-tflite is missing: make test creates it (tflite-runtime==2.14.0, numpy<2)")
        pytest.skip("no .venv-tflite here; run make test to create it")
    res = subprocess.run([py, "-m", "runtime", "verify", host_bundle, "--backend", "tflite"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert res.returncode == 0, res.stderr
    assert "verify: PASSED" in res.stdout
    res = subprocess.run([py, "-m", "runtime", "info", host_bundle], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    assert "tflite_runtime" in res.stdout
