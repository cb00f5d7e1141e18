"""Every architecture the front end accepts trains on an image folder and compiles (issue 11), at the
ONNX opsets the boards accept (issue 10). Tiny images and one short epoch: shapes and agreement, not accuracy."""
import json
import os

import numpy as np
import pytest

from compile.bundle import build_bundle
from compile.checkpoint import load_checkpoint
from compile.data import load_dataset
from compile.errors import UserError
from compile.train import Trainer, default_config
from conftest import run_cli
from imagefolder_data import make_image_folder

QUIET = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def folder16(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("img16")), classes=3, size=16)


def _train(data_root, tmp, arch, groups=2, size=16, **over):
    cfg = default_config(arch=arch, groups=groups, epochs=1, batch_size=8, input_size=size, **over)
    data = load_dataset(data_root, "auto", size, cache_dir=os.path.join(tmp, "cache"), cache="always")
    return Trainer(cfg, data, os.path.join(tmp, "run"), os.path.join(tmp, "out"), progress=False, **QUIET).run()


def _man(bundle):
    with open(os.path.join(bundle, "manifest.json")) as f:
        return json.load(f)


def _group_outputs(bundle, x):
    """Each group's unscaled contribution at batch 1, from the bundle's TFLite signatures."""
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=os.path.join(bundle, "model.tflite"))
    sigs = it.get_signature_list()
    out = []
    for g in range(1, len(_man(bundle)["model"]["level_weights"]) + 1):
        key = "group%d_b1" % g
        run = it.get_signature_runner(key)
        out.append(np.concatenate([run(**{sigs[key]["inputs"][0]: x[i:i + 1]})[sigs[key]["outputs"][0]]
                                   for i in range(len(x))]))
    return out


@pytest.mark.parametrize("arch", ["alexnet-cifar", "vgg-cifar", "resnet-cifar", "mobilenet-cifar"])
def test_every_builtin_trains_on_an_image_folder_compiles_for_host_cpu_and_verifies(folder16, tmp_path, arch):
    ck = _train(folder16, str(tmp_path), arch)
    out, man = build_bundle(ck, "host-cpu", str(tmp_path / "b"), batch_sizes=[1], **QUIET)
    assert man["model"]["arch"] == arch and [lv["level"] for lv in man["levels"]] == [1, 2]
    assert man["levels"][1]["macs_ratio"] == 2.0 and man["engines"]["onnx"]["opset"] == 15
    assert man["engines"]["onnx"]["ir_version"] <= 8
    res = run_cli(["-m", "runtime", "verify", out])
    assert res.returncode == 0, res.stderr


def test_one_channel_48px_five_class_set_is_cached_once_and_compiles(tmp_path):
    root = make_image_folder(str(tmp_path / "grey"), classes=5, size=48, channels=1, n_train=20, n_test=10)
    ck = _train(root, str(tmp_path), "alexnet-cifar", size=48)
    cache = sorted(os.listdir(str(tmp_path / "cache")))
    assert [c.split("-")[:3] for c in cache] == [["test", "48px", "1ch"], ["train", "48px", "1ch"]]
    stamp = [os.stat(str(tmp_path / "cache" / c)).st_mtime_ns for c in cache]
    data = load_dataset(root, "auto", 48, cache_dir=str(tmp_path / "cache"), cache="always")
    assert isinstance(data.train_x.numpy().base, np.memmap) or data.train_x.shape == (20, 1, 48, 48)
    assert [os.stat(str(tmp_path / "cache" / c)).st_mtime_ns for c in cache] == stamp  # built once
    _, man = build_bundle(ck, "host-cpu", str(tmp_path / "b"), batch_sizes=[1], **QUIET)
    assert man["input"]["shape"] == [None, 1, 48, 48] and man["output"]["shape"] == [None, 5]
    assert man["input"]["image"]["color"] == "L"


def test_unequal_widths_record_per_level_costs_and_store_weights_once(folder16, tmp_path):
    ck = _train(folder16, str(tmp_path), "vgg-cifar", groups=3, group_widths="1,1,2")
    model, meta = load_checkpoint(ck)
    assert meta["group_widths"] == [1.0, 1.0, 2.0] and model.widths == [1.0, 1.0, 2.0]
    _, man = build_bundle(ck, "host-cpu", str(tmp_path / "b"), batch_sizes=[1, 4], **QUIET)
    ratios = [lv["macs_ratio"] for lv in man["levels"]]
    assert ratios[:2] == [1.0, 2.0] and 5.0 < ratios[2] < 7.0  # a 2x-wide group costs ~4 groups
    weights_bytes = 4 * man["levels"][-1]["params"]
    assert os.path.getsize(str(tmp_path / "b" / "model.tflite")) <= 1.10 * weights_bytes
    assert len(man["engines"]["tflite"]["signatures"]) == 6


RES_DW_SPEC = {"name": "tiny-res-dw", "blocks": [
    {"type": "conv", "channels": 8, "act": "hardswish"}, {"type": "dwsep", "channels": 16, "stride": 2},
    {"type": "residual", "channels": 16}, {"type": "residual", "channels": 24, "stride": 2, "act": "relu6"},
    {"type": "avgpool"}, {"type": "act", "fn": "relu"}, {"type": "fc", "units": 16, "act": "none"}]}


def test_spec_file_with_residual_and_depthwise_blocks_and_fitted_weights_round_trips_to_the_bundle(
        folder16, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(RES_DW_SPEC))
    res = run_cli(["build.py", "train", "--data", folder16, "--arch", str(spec), "--groups", "3",
                   "--group-widths", "1,1.5,2", "--combine", "fitted", "--epochs", "1", "--batch-size", "8",
                   "--input-size", "16", "--out", str(tmp_path / "ck"), "--run-dir", str(tmp_path / "run"),
                   "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert res.returncode == 0, res.stderr
    ck = str(tmp_path / "ck" / "model.safetensors")
    meta = json.load(open(str(tmp_path / "ck" / "model.json")))
    assert meta["arch"] == "tiny-res-dw" and meta["arch_spec"]["blocks"][1]["type"] == "dwsep"
    w = meta["level_weights"]
    assert [len(r) for r in w] == [1, 2, 3] and meta["combine"] == "fitted"
    assert w[1] != [0.5, 0.5]  # fitted, not the mean
    res = run_cli(["build.py", "--target", "host-cpu", "--checkpoint", ck, "--out", str(tmp_path / "b"),
                   "--batch-sizes", "1"])
    assert res.returncode == 0, res.stderr
    man = _man(str(tmp_path / "b"))
    assert man["model"]["level_weights"] == w and man["model"]["uniform_weights"] is False
    golden = np.load(str(tmp_path / "b" / "golden.npz"))
    contrib = _group_outputs(str(tmp_path / "b"), golden["input"])
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    for k in (1, 2, 3):
        want = golden["level%d" % k]
        tfl = sum(np.float32(wg) * c for wg, c in zip(w[k - 1], contrib))
        onx = sess.run(["logits"], {"input": golden["input"], "level": np.array([k], np.int32)})[0]
        np.testing.assert_allclose(tfl, want, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(onx, want, atol=1e-4, rtol=1e-4)
    model, _ = load_checkpoint(ck)
    assert model.level_weights == w


def test_nano_gpu_onnx_is_opset_13_ir_7_and_hardswish_is_lowered_for_tensorrt_8_2(folder16, tmp_path):
    import onnx
    ck = _train(folder16, str(tmp_path), "mobilenet-cifar")
    out, man = build_bundle(ck, "nano-gpu", str(tmp_path / "b"), **QUIET)
    for rel in ["model.onnx"] + man["engines"]["tensorrt"]["group_onnx"]:
        m = onnx.load(os.path.join(out, rel))
        assert (m.opset_import[0].version, m.ir_version) == (13, 7), rel
        assert "HardSwish" not in {n.op_type for n in m.graph.node}


def _onnx_with(op, opset=13, **attrs):
    from onnx import TensorProto, helper
    node = helper.make_node(op, ["input"], ["logits"], name="n0", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("model,words", [
    (lambda: _onnx_with("HardSwish", opset=14), "opset 14"),
    (lambda: _onnx_with("Det"), "operator Det"),
    (lambda: _onnx_with("MaxPool", kernel_shape=[2]), "only 2D or 3D MaxPool"),
])
def test_tensorrt_8_2_parser_table_refuses_on_the_host_in_one_line(model, words):
    from compile.trt_onnx_check import check_models
    with pytest.raises(UserError) as exc:
        check_models([("groups/group1.onnx", model())], "nano-gpu")
    assert words in str(exc.value) and "\n" not in str(exc.value) and "8.2" in str(exc.value)


def test_a_path_with_no_form_at_the_targets_opset_is_refused_in_one_line():
    """grid_sample exists in ONNX only from opset 16; the nano-gpu target caps the export at 13."""
    import torch
    from compile.emit_onnx import export_path, target_opset
    from compile.targets import get_target

    class Warp(torch.nn.Module):
        def forward(self, x):
            grid = torch.zeros(x.shape[0], 4, 4, 2)
            return torch.nn.functional.grid_sample(x, grid, align_corners=False).flatten(1)

    opset, ir = target_opset(get_target("nano-gpu"))
    with pytest.raises(UserError, match="cannot be expressed as ONNX opset 13") as exc:
        export_path(Warp(), (3, 8, 8), opset, ir)
    assert "\n" not in str(exc.value)
    export_path(Warp(), (3, 8, 8), 16, 8)  # the same path is fine where the consumers accept opset 16
