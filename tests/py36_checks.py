"""The runtime on Python 3.6 (JetPack 4.6's Python), run by tests/test_runtime_py36.py inside .venv-py36
(numpy 1.19.5, onnxruntime 1.10.0, pytest 7.0.1; no torch, no TFLite binding for cp36). Not collected by
the main suite (its name is not test_*.py). Bundles come from the driver:
  DYNN_PY36_BUNDLES  bundles whose ONNX opset onnxruntime 1.10 reads (<= 15): load, infer, verify, threads
  DYNN_PY36_REFUSED  bundles at a newer opset: must be refused with one line, never a traceback
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from runtime import RuntimeUserError, load
from runtime.bundle import load_golden
from test_runtime_threads import _hammer, _inputs, _references

RUNNABLE = [b for b in os.environ.get("DYNN_PY36_BUNDLES", "").split(os.pathsep) if b]
REFUSED = [b for b in os.environ.get("DYNN_PY36_REFUSED", "").split(os.pathsep) if b]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "runtime"] + list(args), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def test_this_is_python_3_6_with_onnxruntime_1_10():
    import onnxruntime
    assert sys.version_info[:2] == (3, 6) and onnxruntime.__version__ == "1.10.0"
    assert RUNNABLE, "the driver passed no bundle to run"


@pytest.mark.parametrize("bundle", RUNNABLE)
def test_load_set_level_and_infer_match_the_golden_vectors(bundle):
    with load(bundle, backend="onnx", threads=1) as m:
        g = load_golden(m.bundle_dir, m.manifest)
        np.testing.assert_allclose(m.preprocess(g["images"]), g["input"], atol=1e-5)
        for k in reversed(m.levels):
            m.set_level(k)
            np.testing.assert_allclose(m.infer(g["input"]), g["level%d" % k], atol=1e-4, rtol=1e-4)
        assert list(m.predict(g["images"])) == list(g["level%d" % m.level].argmax(1))
        with pytest.raises(RuntimeUserError, match="does not exist"):
            m.set_level(2.0)


@pytest.mark.parametrize("bundle", RUNNABLE)
def test_verify_info_and_run_commands(bundle):
    res = cli("verify", bundle, "--backend", "onnx", "--threads", "1")
    assert res.returncode == 0 and "verify: PASSED (onnx backend" in res.stdout, res.stdout + res.stderr
    res = cli("info", bundle, "--backend", "onnx")
    assert res.returncode == 0 and "running on onnx" in res.stdout, res.stderr
    res = cli("run", bundle, "--backend", "onnx", "--runs", "3", "--batch", "2")
    assert res.returncode == 0 and "(batch 2, 3 runs, backend onnx)" in res.stdout, res.stderr


@pytest.mark.parametrize("bundle", RUNNABLE)
def test_four_threads_share_one_model(bundle):
    with load(bundle, backend="onnx", threads=1) as m:
        xs = _inputs(m.input_shape)
        calls, wrong, errors = _hammer(m, xs, _references(m, xs), calls=12)
    assert errors == [] and (calls, wrong) == (48, 0)


@pytest.mark.parametrize("bundle", REFUSED)
def test_a_newer_opset_is_refused_in_one_line(bundle):
    res = cli("verify", bundle, "--backend", "onnx")
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "onnxruntime 1.10.0 cannot load" in res.stderr and "opset" in res.stderr
