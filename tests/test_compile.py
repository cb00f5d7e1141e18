import glob
import json
import os

import numpy as np
import pytest
import torch

from compile.bundle import build_bundle
from compile.checkpoint import load_checkpoint
from compile.errors import UserError
from conftest import ROOT, run_cli, untrained_ckpt, train_tiny


def _manifest(bundle):
    return json.load(open(os.path.join(bundle, "manifest.json")))


def test_every_level_agrees_across_pytorch_onnxruntime_and_litert(tiny_ckpt, host_bundle):
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter
    model, _ = load_checkpoint(tiny_ckpt)
    man = _manifest(host_bundle)
    sess = ort.InferenceSession(os.path.join(host_bundle, "model.onnx"), providers=["CPUExecutionProvider"])
    interp = Interpreter(model_path=os.path.join(host_bundle, "model.tflite"))
    sigs = interp.get_signature_list()
    rng = np.random.default_rng(1)
    for batch in man["engines"]["tflite"]["batch_sizes"]:
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        with torch.no_grad():
            ref = [t.numpy() for t in model.all_levels(torch.from_numpy(x))]
        contrib = []
        for g in range(1, 4):
            key = "group%d_b%d" % (g, batch)
            out = interp.get_signature_runner(key)(**{sigs[key]["inputs"][0]: x})
            contrib.append(out[sigs[key]["outputs"][0]])
        for k in (1, 2, 3):
            onnx_out = sess.run(["logits"], {"input": x, "level": np.array([k], np.int32)})[0]
            tfl_out = sum(contrib[:k]) * man["model"]["level_scale"][k - 1]
            np.testing.assert_allclose(onnx_out, ref[k - 1], atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(tfl_out, ref[k - 1], atol=1e-4, rtol=1e-4)


def test_manifest_lists_every_file_with_checksums_ops_tools_and_levels(host_bundle):
    from compile.checkpoint import sha256_file
    man = _manifest(host_bundle)
    assert man["schema"] == "dynn-bundle" and man["schema_version"] == 2
    on_disk = {os.path.relpath(p, host_bundle) for p in glob.glob(os.path.join(host_bundle, "**"), recursive=True)
               if os.path.isfile(p)} - {"manifest.json"}
    assert set(man["files"]) == on_disk
    for rel, info in man["files"].items():
        assert sha256_file(os.path.join(host_bundle, rel)) == info["sha256"]
    ops = {o["name"] for o in man["engines"]["tflite"]["operators"]}
    assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops
    assert man["engines"]["tflite"]["min_runtime"]["tflite"] == "2.7.0"
    assert man["tools"]["torch"] and man["tools"]["litert_torch"] and man["tools"]["onnx"]
    assert [lv["level"] for lv in man["levels"]] == [1, 2, 3]
    assert man["input"]["normalisation"]["mean"] and man["output"]["shape"] == [None, 10]


def test_tflite_file_stores_shared_weights_once(tiny_ckpt, host_bundle, tmp_path):
    """The all-levels file is at most 10% larger than a file of the full-width level alone."""
    from compile.fold_bn import DeployLevel, deploy_paths
    from compile.emit_tflite import convert_modules
    model, meta = load_checkpoint(tiny_ckpt)
    full = DeployLevel(deploy_paths(model), 1.0 / 3).eval()
    ref = str(tmp_path / "full.tflite")
    convert_modules([("full_b%d" % b, full, b) for b in (1, 32)], lambda b: (b, 3, 32, 32), ref)
    ratio = os.path.getsize(os.path.join(host_bundle, "model.tflite")) / os.path.getsize(ref)
    assert ratio <= 1.10, ratio


@pytest.mark.parametrize("groups", [2, 8])
def test_any_group_count_from_2_to_8_compiles(groups, tmp_path):
    ck = untrained_ckpt(groups, str(tmp_path / "ck" / "model.safetensors"))
    out, man = build_bundle(ck, "host-cpu", str(tmp_path / "b"), batch_sizes=[1], log=lambda *a: None)
    assert len(man["engines"]["tflite"]["signatures"]) == groups
    assert [lv["level"] for lv in man["levels"]] == list(range(1, groups + 1))


def test_unknown_target_is_a_one_line_error_listing_the_targets(tiny_ckpt):
    res = run_cli(["build.py", "--target", "pi5", "--checkpoint", tiny_ckpt])
    assert res.returncode == 1 and "known targets: host-cpu, nano-cpu, nano-gpu, xu3" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_dense_baseline_checkpoint_is_not_a_grouped_model(tiny_data, tmp_path):
    ck = train_tiny(tiny_data, str(tmp_path / "d"), str(tmp_path / "r"), groups=2, scheme="dense", epochs=1)
    with pytest.raises(UserError, match="only grouped models"):
        build_bundle(ck, "host-cpu", str(tmp_path / "b"))
    assert not os.path.exists(str(tmp_path / "b"))


def test_unwritable_output_is_refused_before_any_work(tiny_ckpt, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_cli(["build.py", "--target", "host-cpu", "--checkpoint", tiny_ckpt, "--out", str(blocker / "b")])
    assert res.returncode == 1 and "cannot write the bundle" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_failed_build_leaves_no_half_bundle_and_keeps_the_good_one(tiny_ckpt, host_bundle, tmp_path, monkeypatch):
    import shutil
    import compile.emit_tflite as et
    out = str(tmp_path / "bundle")
    shutil.copytree(host_bundle, out)
    before = {p: open(p, "rb").read() for p in glob.glob(out + "/*")}

    def boom(*a, **k):
        raise UserError("simulated converter failure")

    monkeypatch.setattr(et, "emit_grouped", boom)
    with pytest.raises(UserError, match="simulated"):
        build_bundle(tiny_ckpt, "host-cpu", out, log=lambda *a: None)
    assert {p: open(p, "rb").read() for p in glob.glob(out + "/*")} == before
    assert not [p for p in os.listdir(str(tmp_path)) if p.startswith(".")]


def test_nano_gpu_without_tensorrt_writes_the_rest_and_says_where_the_engine_is_built(tiny_ckpt, tmp_path):
    out = str(tmp_path / "nano-gpu")
    res = run_cli(["build.py", "--target", "nano-gpu", "--checkpoint", tiny_ckpt, "--out", out])
    assert res.returncode == 0, res.stderr
    assert "built on the device" in res.stdout and "runtime trt-build" in res.stdout
    man = _manifest(out)
    assert man["engines"]["tensorrt"]["group_onnx"] == ["groups/group%d.onnx" % g for g in (1, 2, 3)]
    assert "tflite" not in man["engines"] and os.path.isfile(os.path.join(out, "model.onnx"))


def test_paper_checkpoint_rebuilds_the_same_tflite_bytes_and_the_same_onnx_outputs(tmp_path):
    """The spec-driven model builder changes nothing of the shipped alexnet-cifar checkpoint: model.tflite is
    byte-identical to the committed host-cpu bundle's; model.onnx is now opset 15 / IR 8 (issue 10: onnxruntime
    1.10 on Python 3.6), so its bytes differ by design and its outputs are compared at every level instead."""
    import onnxruntime as ort
    ref = os.path.join(ROOT, "artifacts", "paper", "host-cpu")
    out, man = build_bundle(os.path.join(ROOT, "artifacts", "paper"), "host-cpu", str(tmp_path / "b"),
                            log=lambda *a: None)
    shipped = _manifest(ref)
    assert man["files"]["model.tflite"]["sha256"] == shipped["files"]["model.tflite"]["sha256"]
    assert (man["engines"]["onnx"]["opset"], man["engines"]["onnx"]["ir_version"]) == (15, 8)
    x = np.load(os.path.join(ref, "golden.npz"))["input"]
    new = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    old = ort.InferenceSession(os.path.join(ref, "model.onnx"), providers=["CPUExecutionProvider"])
    for k in range(1, 5):
        feed = {"input": x, "level": np.array([k], np.int32)}
        np.testing.assert_array_equal(new.run(["logits"], feed)[0], old.run(["logits"], feed)[0])
    assert man["model"]["level_weights"] == [[1.0 / k] * k for k in range(1, 5)]
    assert man["model"]["level_scale"] == shipped["model"]["level_scale"]
    assert [lv["macs_ratio"] for lv in man["levels"]] == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("ckpt", ["paper", "paper/baselines/dense", "paper/baselines/static/width-1",
                                  "paper/baselines/static/width-4"])
def test_shipped_checkpoints_load_into_the_spec_built_models(ckpt):
    model, meta = load_checkpoint(os.path.join(ROOT, "artifacts", ckpt))
    assert model.arch == "alexnet-cifar" and model.widths == [1.0] * int(meta["groups"]) and model.is_uniform()
