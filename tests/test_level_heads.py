"""Per-level heads (issue 12): level k = a linear head over the features of groups 1..k, fitted after step k,
deployed as each group's contributions to levels g..G and added up by runtime.backends.base.Combiner."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import run_cli, train_tiny
from runtime import RuntimeUserError, load
from runtime.bundle import load_golden


@pytest.fixture(scope="module")
def heads_ckpt(tiny_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("heads")
    return train_tiny(tiny_data, str(d / "out"), str(d / "run"), groups=3, epochs=1, combine="heads")


@pytest.fixture(scope="module")
def heads_bundle(heads_ckpt, tiny_data, tmp_path_factory):
    from compile.bundle import build_bundle
    out = str(tmp_path_factory.mktemp("heads-bundles") / "host-cpu")
    build_bundle(heads_ckpt, "host-cpu", out, data_dir=tiny_data, log=lambda *a: None, precision="both")
    return out


def test_training_with_heads_fits_every_level_and_the_checkpoint_uses_them(heads_ckpt):
    from compile.checkpoint import load_checkpoint
    model, meta = load_checkpoint(heads_ckpt)
    assert meta["combine"] == "heads" and model.has_heads()
    assert [f["level"] for f in meta["level_heads"]["fits"]] == [1, 2, 3]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        levels = model.all_levels(x)
        feats = torch.cat([p.embed(x) for p in model.groups], 1)
        # level 3 is its head over all three groups' features, not the weighted sum of their own heads
        torch.testing.assert_close(levels[2], model.level_heads[2](feats))
        model.heads_ready = [False] * 3
        assert not torch.allclose(model.all_levels(x)[2], levels[2])


def test_heads_fitted_after_training_equal_those_fitted_during_it(tiny_data, heads_ckpt, tmp_path):
    """`build.py heads` on a --combine fitted checkpoint is the same fit --combine heads makes after each step."""
    from compile.checkpoint import load_checkpoint
    fitted = train_tiny(tiny_data, str(tmp_path / "out"), str(tmp_path / "run"), groups=3, epochs=1, combine="fitted")
    res = run_cli(["build.py", "heads", fitted, "--data", tiny_data, "--out", str(tmp_path / "posthoc")])
    assert res.returncode == 0, res.stderr
    post, pmeta = load_checkpoint(str(tmp_path / "posthoc"))
    during, _ = load_checkpoint(heads_ckpt)
    for a, b in zip(post.level_heads, during.level_heads):
        torch.testing.assert_close(a.weight, b.weight, atol=1e-4, rtol=1e-4)
    assert pmeta["combine"] == "heads" and all("test_accuracy_without_heads" in lv for lv in pmeta["levels"])
    # a checkpoint without a held-out slice cannot be given heads: one line, nothing written
    res = run_cli(["build.py", "heads", heads_ckpt, "--data", tiny_data, "--out", str(tmp_path / "again")])
    assert res.returncode != 0 and "--combine fitted" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not os.path.exists(str(tmp_path / "again"))


def test_a_bundle_with_heads_reproduces_torch_in_every_engine_and_precision(heads_bundle):
    man = json.load(open(os.path.join(heads_bundle, "manifest.json")))
    assert man["schema_version"] == 3 and man["model"]["level_heads"]["group_outputs"] == [30, 20, 10]
    for backend in ("tflite", "onnx"):
        with load(heads_bundle, backend=backend, threads=1) as m:
            g = load_golden(m.bundle_dir, m.manifest)
            for k in m.levels:
                np.testing.assert_allclose(m.infer(g["input"], k), g["level%d" % k], atol=1e-4, rtol=1e-4)
    res = run_cli(["-m", "runtime", "verify", heads_bundle, "--threads", "1"])
    assert res.returncode == 0 and "PASSED" in res.stdout, res.stdout + res.stderr
    assert all(lv.get("test_accuracy_int8") is not None for lv in man["levels"])


def test_placed_groups_add_the_same_level_slices_as_one_interpreter(heads_bundle):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    x = np.random.RandomState(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with load(heads_bundle, backend="tflite", threads=1) as m:
        want = {k: m.infer(x, k) for k in m.levels}
        for level, split in ((3, {"cpu:%d" % cpus[0]: [1, 3], "cpu:%d" % cpus[1]: [2]}),
                             (2, {"cpu:%d" % cpus[0]: [2], "cpu:%d" % cpus[1]: [1]})):
            m.set_operating_point(level=level, placement=split)
            np.testing.assert_array_equal(m.infer(x), want[level])
        # ONNX's level-1 graph has level 1's head, not level 3's share of group 1: refused in one line
        with pytest.raises(RuntimeUserError, match="own heads"):
            m.set_operating_point(level=3, placement={"cpu:%d" % cpus[0]: {"groups": [1], "engine": "onnx"},
                                                     "cpu:%d" % cpus[1]: [2, 3]})


def test_a_manifest_whose_group_outputs_do_not_fit_the_heads_is_refused(heads_bundle, tmp_path):
    import shutil
    b = str(tmp_path / "b")
    shutil.copytree(heads_bundle, b)
    path = os.path.join(b, "manifest.json")
    man = json.load(open(path))
    man["model"]["level_heads"]["group_outputs"] = [10, 10, 10]
    json.dump(man, open(path, "w"))
    with pytest.raises(RuntimeUserError, match="group_outputs"):
        load(b)


def test_the_benchmarks_single_level_reference_computes_the_level_with_its_head(heads_ckpt, heads_bundle):
    from bench.engines import combiners
    from compile.checkpoint import load_checkpoint
    from compile.fold_bn import DeployLevel, deploy_paths
    model, _ = load_checkpoint(heads_ckpt)
    paths = deploy_paths(model)
    comb = combiners(json.load(open(os.path.join(heads_bundle, "manifest.json"))))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for k, want in enumerate(model.all_levels(x), 1):
            torch.testing.assert_close(DeployLevel(paths[:k], comb[k - 1])(x), want, atol=1e-4, rtol=1e-4)
