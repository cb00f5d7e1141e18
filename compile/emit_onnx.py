"""ONNX emission: one graph with a runtime `level` input, plus (for TensorRT) one graph per group.

Group 1 sits in the main graph; group g > 1 sits inside `If(level >= g)` together with its own
weights: onnxruntime then runs only the taken branches, and keeps its fast convolution kernels,
which it does not use for weights read from the outer scope (../shared/docs/measured.md, ONNX).
`level` is int32 [1] because TensorRT 8.2 has no int64 network inputs.
"""
import io
import warnings

import numpy as np
import torch

OPSET = 17


def export_path(module, input_shape):
    """ONNX ModelProto of one group path: `input` [N, C, H, W] -> `logits` [N, classes] (unscaled)."""
    import onnx
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter folds constants and is fast; torch is pinned, so its output is stable.
        torch.onnx.export(module, (torch.zeros((1,) + tuple(input_shape)),), f, dynamo=False,
                          input_names=["input"], output_names=["logits"], opset_version=OPSET,
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=True)
    model = onnx.load_from_string(f.getvalue())
    model.producer_name = "dynn"
    return model


def _renamed(graph, prefix, keep):
    """Copies of a graph's nodes and initializers with every internal name prefixed (unique per group)."""
    from onnx import helper
    rename = lambda n: n if (n in keep or n == "") else prefix + n  # noqa: E731
    nodes = []
    for n in graph.node:
        new = helper.make_node(n.op_type, [rename(i) for i in n.input], [rename(o) for o in n.output],
                               name=prefix + (n.name or n.op_type), domain=n.domain)
        new.attribute.extend(n.attribute)
        nodes.append(new)
    inits = []
    for t in graph.initializer:
        c = type(t)()
        c.CopyFrom(t)
        c.name = rename(t.name)
        inits.append(c)
    return nodes, inits, rename(graph.output[0].name)


def compose_levels(group_models, level_scale, num_classes, input_shape):
    """The all-levels graph described in docs/bundle.md."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    G = len(group_models)
    out_t = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", num_classes])  # noqa: E731
    nodes, inits = [], []
    n1, i1, acc = _renamed(group_models[0].graph, "g1/", {"input"})
    nodes += n1
    inits += i1
    for g in range(2, G + 1):
        gn, gi, contrib = _renamed(group_models[g - 1].graph, "g%d/" % g, {"input"})
        then_out, else_out = "acc%d_then" % g, "acc%d_else" % g
        then_g = helper.make_graph(gn + [helper.make_node("Add", [acc, contrib], [then_out], name="g%d/sum" % g)],
                                   "group%d" % g, [], [out_t(then_out)], initializer=gi)
        else_g = helper.make_graph([helper.make_node("Identity", [acc], [else_out], name="g%d/skip" % g)],
                                   "skip%d" % g, [], [out_t(else_out)])
        inits.append(numpy_helper.from_array(np.array([g], np.int32), "const/level%d" % g))
        nodes.append(helper.make_node("GreaterOrEqual", ["level", "const/level%d" % g], ["run%d" % g],
                                      name="level>=%d" % g))
        nodes.append(helper.make_node("If", ["run%d" % g], ["acc%d" % g], name="if_group%d" % g,
                                      then_branch=then_g, else_branch=else_g))
        acc = "acc%d" % g
    inits.append(numpy_helper.from_array(np.asarray(level_scale, np.float32), "const/level_scale"))
    inits.append(numpy_helper.from_array(np.array([1], np.int32), "const/one"))
    nodes += [helper.make_node("Sub", ["level", "const/one"], ["level_index"], name="level-1"),
              helper.make_node("Gather", ["const/level_scale", "level_index"], ["scale"], axis=0, name="scale"),
              helper.make_node("Mul", [acc, "scale"], ["logits"], name="scaled")]
    graph = helper.make_graph(
        nodes, "dynn_all_levels",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N"] + list(input_shape)),
         helper.make_tensor_value_info("level", TensorProto.INT32, [1])],
        [out_t("logits")], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dynn")
    model.ir_version = group_models[0].ir_version
    onnx.checker.check_model(model, full_check=True)
    return model
