"""Per-level combination weights on the runtime side (issue 11): level k = sum_g w[k][g] * contribution_g.

The weights are written by hand into a copy of the host-cpu bundle and its golden vectors are rebuilt from
the engine's own per-group outputs (read straight from the interpreter), so the test needs no compiler."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli
from runtime import RuntimeUserError, load
from runtime.backends.tflite_backend import interpreter_class
from runtime.bundle import load_golden, sha256_file


def group_outputs(bundle, man, x):
    """[G, N, classes] unscaled logits of each group, from the TFLite file's group signatures at batch 1."""
    cls, _ = interpreter_class()
    interp = cls(model_path=os.path.join(bundle, man["engines"]["tflite"]["file"]), num_threads=1)
    out = []
    for g in range(1, man["model"]["groups"] + 1):
        run = interp.get_signature_runner("group%d_b1" % g)
        io = interp.get_signature_list()["group%d_b1" % g]
        out.append(np.concatenate([run(**{io["inputs"][0]: x[i:i + 1]})[io["outputs"][0]] for i in range(len(x))]))
    return np.stack(out)


def weighted_bundle(src, dst, weights):
    """Copy of the bundle with model.level_weights set and golden vectors recomputed by those weights."""
    shutil.copytree(src, dst)
    path = os.path.join(dst, "manifest.json")
    man = json.load(open(path))
    man["model"]["level_weights"] = weights
    golden = os.path.join(dst, man["golden"]["file"])
    with np.load(golden) as z:
        arrays = {k: z[k] for k in z.files}
    c = group_outputs(dst, man, arrays["input"])
    for k, w in enumerate(weights, 1):
        arrays["level%d" % k] = sum(np.float32(wg) * c[g] for g, wg in enumerate(w)).astype(np.float32)
    np.savez(golden, **arrays)
    man["files"][man["golden"]["file"]] = {"size": os.path.getsize(golden), "sha256": sha256_file(golden)}
    json.dump(man, open(path, "w"))
    return dst, c


def skewed(levels):
    """Later groups count more: w[k][g] proportional to g + 1, normalised to sum 1."""
    return [[(g + 1.0) / sum(range(1, k + 2)) for g in range(k)] for k in range(1, levels + 1)]


def test_level_weights_are_applied_per_group_and_verify_passes(host_bundle, tmp_path):
    levels = len(json.load(open(os.path.join(host_bundle, "manifest.json")))["levels"])
    b, c = weighted_bundle(host_bundle, str(tmp_path / "w"), skewed(levels))
    with load(b, backend="tflite", threads=1) as m:
        g = load_golden(m.bundle_dir, m.manifest)
        for k in m.levels:
            np.testing.assert_allclose(m.infer(g["input"], k), g["level%d" % k], atol=1e-5, rtol=1e-5)
        # the weighting matters: the plain mean of the same groups is a different answer
        assert not np.allclose(m.infer(g["input"], levels), c[:levels].mean(0), atol=1e-4)
        # batches the engine does not carry (chunked and padded) use the same weights
        x = np.concatenate([g["input"]] * 5)[:37]
        np.testing.assert_allclose(m.infer(x, levels), np.concatenate([g["level%d" % levels]] * 5)[:37], atol=1e-5)
    res = run_cli(["-m", "runtime", "verify", b, "--backend", "tflite", "--threads", "1"])
    assert res.returncode == 0 and "verify: PASSED" in res.stdout, res.stdout + res.stderr


def test_uniform_weights_keep_the_old_arithmetic_bit_for_bit(host_bundle, tmp_path):
    man = json.load(open(os.path.join(host_bundle, "manifest.json")))
    n = len(man["levels"])
    b = str(tmp_path / "u")
    shutil.copytree(host_bundle, b)
    man["model"]["level_weights"] = [[1.0 / k] * k for k in range(1, n + 1)]
    json.dump(man, open(os.path.join(b, "manifest.json"), "w"))
    with load(host_bundle, backend="tflite", threads=1) as old, load(b, backend="tflite", threads=1) as new:
        x = np.random.RandomState(3).standard_normal((5,) + old.input_shape).astype(np.float32)
        g = load_golden(old.bundle_dir, old.manifest)
        for k in old.levels:
            assert np.array_equal(old.infer(x, k), new.infer(x, k))
            assert np.array_equal(new.infer(g["input"], k), old.infer(g["input"], k))


@pytest.mark.parametrize("weights", [[[1.0]], "mean", [[1.0], [0.5]], [[1.0], [0.5, "x"]]])
def test_malformed_level_weights_are_refused_in_one_line(host_bundle, tmp_path, weights):
    b = str(tmp_path / "m")
    shutil.copytree(host_bundle, b)
    man = json.load(open(os.path.join(b, "manifest.json")))
    man["model"]["level_weights"] = weights
    json.dump(man, open(os.path.join(b, "manifest.json"), "w"))
    with pytest.raises(RuntimeUserError, match=r"manifest.json: model.level_weights must be a list of \d+ lists"):
        load(b)
