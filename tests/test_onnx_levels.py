"""The portable ONNX engine runs only the groups of the requested level (issue 9): outputs of levels below
group k do not depend on group k's weights, and onnxruntime executes fewer convolutions at lower levels."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def _sess(model_bytes, profile_dir=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort")
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _if_nodes(model):
    return [n for n in model.graph.node if n.op_type == "If"]


def _run(sess, x, level):
    return sess.run(["logits"], {"input": x, "level": np.array([level], np.int32)})[0]


def test_perturbing_group_k_leaves_every_level_below_k_unchanged(host_bundle):
    model = onnx.load(os.path.join(host_bundle, "model.onnx"))
    groups = json.load(open(os.path.join(host_bundle, "manifest.json")))["model"]["groups"]
    ifs = _if_nodes(model)
    assert len(ifs) == groups - 1, "groups 2..G must each sit under their own If"
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    base = _sess(model.SerializeToString())
    ref = {k: _run(base, x, k) for k in range(1, groups + 1)}
    for k in range(2, groups + 1):
        m = onnx.load(os.path.join(host_bundle, "model.onnx"))
        branch = [a.g for a in _if_nodes(m)[k - 2].attribute if a.name == "then_branch"][0]
        assert len(branch.initializer) > 0, "group %d's weights must live inside its branch" % k
        for t in branch.initializer:
            w = numpy_helper.to_array(t)
            if w.dtype == np.float32:
                t.CopyFrom(numpy_helper.from_array(w + np.float32(0.5), t.name))
        s = _sess(m.SerializeToString())
        for level in range(1, groups + 1):
            out = _run(s, x, level)
            if level < k:
                np.testing.assert_array_equal(out, ref[level])
            else:
                assert not np.allclose(out, ref[level]), "level %d must read group %d" % (level, k)


def test_onnxruntime_executes_one_more_group_of_convolutions_per_level(host_bundle, tmp_path):
    model_bytes = open(os.path.join(host_bundle, "model.onnx"), "rb").read()
    groups = json.load(open(os.path.join(host_bundle, "manifest.json")))["model"]["groups"]
    x = np.zeros((1, 3, 32, 32), np.float32)
    convs = []
    for level in range(1, groups + 1):
        d = tmp_path / ("L%d" % level)
        d.mkdir()
        s = _sess(model_bytes, str(d))
        _run(s, x, level)
        with open(s.end_profiling()) as f:
            events = json.load(f)
        convs.append(sum(1 for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
                         and e.get("args", {}).get("op_name") in ("Conv", "FusedConv")))
    per_group = convs[0]
    assert per_group > 0
    assert convs == [per_group * k for k in range(1, groups + 1)], convs
