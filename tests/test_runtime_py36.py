"""The runtime's own tests on Python 3.6 for real (issue 10), in the .venv-py36 that `make test` creates:
load, set_level, infer, verify, threads (tests/py36_checks.py), the platform layer on the fake sysfs and
the manager. Skipped only where the Python 3.6 interpreter itself is absent."""
import glob
import json
import os
import subprocess
import time

import pytest

from conftest import ROOT

PY36_INTERPRETER = os.path.expanduser("~/.pyenv/versions/3.6.15/bin/python")  # the Makefile's PY36
PY36 = os.path.join(ROOT, ".venv-py36", "bin", "python")
# onnxruntime 1.10.0, the last release for Python 3.6, refuses newer models: "Current official support
# for domain ai.onnx is till opset 15" (its own load error).
ORT_1_10_MAX_OPSET = 15


@pytest.fixture(scope="module")
def nano_gpu_bundle(tiny_ckpt, tmp_path_factory):
    """The bundle of the board that has Python 3.6 (Jetson Nano, JetPack 4.6)."""
    from compile.bundle import build_bundle
    out = str(tmp_path_factory.mktemp("py36") / "nano-gpu")
    build_bundle(tiny_ckpt, "nano-gpu", out, log=lambda *a: None)
    return out


def _name(bundle):
    rel = os.path.relpath(bundle, ROOT)
    return rel if not rel.startswith("..") else "fresh " + os.path.basename(bundle)


def _opset(bundle):
    with open(os.path.join(bundle, "manifest.json")) as f:
        return json.load(f)["engines"]["onnx"]["opset"]


def test_runtime_platform_and_manager_tests_pass_on_python_3_6(nano_gpu_bundle, host_bundle):
    if not os.path.exists(PY36_INTERPRETER):
        pytest.skip("no Python 3.6 interpreter at %s (CI's image has it under pyenv)" % PY36_INTERPRETER)
    assert os.path.exists(PY36), ".venv-py36 is missing: `make test` creates it from %s" % PY36_INTERPRETER
    shipped = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(ROOT, "artifacts", "*", "manifest.json")))
    bundles = [nano_gpu_bundle, host_bundle] + shipped
    runnable = [b for b in bundles if _opset(b) <= ORT_1_10_MAX_OPSET]
    refused = [b for b in bundles if _opset(b) > ORT_1_10_MAX_OPSET]
    env = dict(os.environ, DYNN_PY36_BUNDLES=os.pathsep.join(runnable), DYNN_PY36_REFUSED=os.pathsep.join(refused))
    platform = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests", "test_platform_*.py")))
    tests = ["tests/py36_checks.py"] + platform + ["tests/test_manager.py"]
    t = time.time()
    res = subprocess.run([PY36, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "filterwarnings="] + tests,
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, timeout=1200)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    print("Python 3.6 run: %s in %.1f s (runnable bundles %s; refused at opset > %d: %s)"
          % (summary, time.time() - t, [_name(b) for b in runnable], ORT_1_10_MAX_OPSET, [_name(b) for b in refused]))
    assert res.returncode == 0, res.stdout[-6000:]
    assert " passed" in summary and " failed" not in summary and " error" not in summary, summary
