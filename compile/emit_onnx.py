"""ONNX emission: one graph with a runtime `level` input, plus (for TensorRT) one graph per group.

Group 1 sits in the main graph; group g > 1 sits inside `If(level >= g)` together with its own
weights: onnxruntime then runs only the taken branches, and keeps its fast convolution kernels,
which it does not use for weights read from the outer scope (../shared/docs/measured.md, ONNX).
`level` is int32 [1] because TensorRT 8.2 has no int64 network inputs.

Opset and IR version come from the target file (onnx_max_opset, onnx_max_ir_version): the highest
that every consumer of that target's bundle loads (TensorRT 8.2's parser: opset 13; onnxruntime 1.10,
the last for Python 3.6: opset 15, IR 8).
"""
import io
import warnings

import numpy as np
import torch

from compile.errors import UserError

EXPORTER_MAX_OPSET = 17  # what the pinned torch's TorchScript exporter is used at; targets may ask for less


def target_opset(target):
    """(opset, ir_version) to emit for a target: its declared maxima, capped by the exporter."""
    return (min(int(target.get("onnx_max_opset", EXPORTER_MAX_OPSET)), EXPORTER_MAX_OPSET),
            int(target.get("onnx_max_ir_version", 8)))


def export_path(module, input_shape, opset=EXPORTER_MAX_OPSET, ir_version=8):
    """ONNX ModelProto of one group path: `input` [N, C, H, W] -> `logits` [N, classes] (unscaled)."""
    import onnx
    f = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter folds constants and is fast; torch is pinned, so its output is stable.
            torch.onnx.export(module, (torch.zeros((1,) + tuple(input_shape)),), f, dynamo=False,
                              input_names=["input"], output_names=["logits"], opset_version=opset,
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=True)
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:  # an op with no form at this opset
        raise UserError("the group path cannot be expressed as ONNX opset %d (%s); this target's consumers "
                        "accept nothing newer: change the architecture" % (opset, str(exc).splitlines()[0][:160]))
    model = onnx.load_from_string(f.getvalue())
    model.producer_name = "dynn"
    _cap_ir(model, ir_version)
    return model


def _cap_ir(model, ir_version):
    """Declare the oldest IR the file needs: the exporter writes its own newest, which older loaders refuse."""
    import onnx
    if model.ir_version > ir_version:
        model.ir_version = ir_version
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise UserError("the ONNX graph does not fit IR version %d (%s)" % (ir_version, str(exc).splitlines()[0]))


def _prefixed(model, prefix):
    """Graph of a group model with every name but `input` prefixed, so groups can share one graph."""
    from onnx.compose import add_prefix_graph
    g = add_prefix_graph(model.graph, prefix, rename_inputs=False)
    for n in g.node:  # as the shipped bundles have them: every node named, its (default) domain written out
        n.name = n.name or prefix + n.op_type
        n.domain = n.domain
    return g


def _weights_nodes(level_scale, level_weights, G):
    """Initializers and nodes that give each group's weight at the requested level (or the level's scale)."""
    from onnx import helper, numpy_helper
    inits = [numpy_helper.from_array(np.array([1], np.int32), "const/one")]
    nodes = [helper.make_node("Sub", ["level", "const/one"], ["level_index"], name="level-1")]
    if level_weights is None:
        inits.append(numpy_helper.from_array(np.asarray(level_scale, np.float32), "const/level_scale"))
        nodes.append(helper.make_node("Gather", ["const/level_scale", "level_index"], ["scale"], axis=0, name="scale"))
        return inits, nodes
    table = np.zeros((G, G), np.float32)  # row k-1: level k's weights, zero for groups above k (never run)
    for k, row in enumerate(level_weights):
        table[k, :len(row)] = row
    inits.append(numpy_helper.from_array(table, "const/level_weights"))
    nodes.append(helper.make_node("Gather", ["const/level_weights", "level_index"], ["weights"], axis=0,
                                  name="weights"))  # [1, G]
    for g in range(1, G + 1):
        inits.append(numpy_helper.from_array(np.array([g - 1], np.int32), "const/group%d" % g))  # TRT: no int64
        nodes.append(helper.make_node("Gather", ["weights", "const/group%d" % g], ["w%d" % g], axis=1,
                                      name="w%d" % g))  # [1, 1]: broadcasts over [N, classes]
    return inits, nodes


def _level_slice(out, g, C, G):
    """Nodes and initializers that take level `level`'s slice of group g's level-head outputs [N, (G-g+1)*C]
    (compile/level_heads.deploy_heads): Reshape [N, G-g+1, C], Gather index level-g on axis 1, Reshape [N, C]."""
    from onnx import helper, numpy_helper
    p = "g%d/level_slice/" % g
    inits = [numpy_helper.from_array(np.array([0, G - g + 1, C], np.int64), p + "shape3"),
             numpy_helper.from_array(np.array([0, C], np.int64), p + "shape2"),
             numpy_helper.from_array(np.array([g], np.int32), p + "g")]  # int32: TensorRT 8.2 has no int64 inputs
    nodes = [helper.make_node("Reshape", [out, p + "shape3"], [p + "by_level"], name=p + "by_level"),
             helper.make_node("Sub", ["level", p + "g"], [p + "index"], name=p + "index"),
             helper.make_node("Gather", [p + "by_level", p + "index"], [p + "taken"], axis=1, name=p + "take"),
             helper.make_node("Reshape", [p + "taken", p + "shape2"], [p + "out"], name=p + "out")]
    return inits, nodes, p + "out"


def compose_levels(group_models, level_scale, num_classes, input_shape, level_weights=None, heads=False):
    """The all-levels graph described in docs/bundle.md. level_weights None: the uniform mean graph
    (sum, then times level_scale[k-1], as the shipped bundles); else level k = sum_g w[k-1][g-1] * c_g;
    heads: each group outputs its contributions to levels g..G and level k sums their slices k-g."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    G, C = len(group_models), num_classes
    opset = group_models[0].opset_import[0].version
    out_t = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", C])  # noqa: E731
    w_inits, w_nodes = _weights_nodes(level_scale, level_weights, G)
    weighted = level_weights is not None and not heads

    def part(g, out):
        """(initializers, nodes, name) that turn group g's output into its term of the level's sum."""
        if heads:
            return _level_slice(out, g, C, G)
        if weighted:
            name = "acc1" if g == 1 else "g%d/weighted" % g
            return [], [helper.make_node("Mul", [out, "w%d" % g], [name], name="g%d/weighted" % g)], name
        return [], [], out

    g1 = _prefixed(group_models[0], "g1/")
    p_inits, p_nodes, acc = part(1, g1.output[0].name)
    nodes, inits = (w_nodes if weighted else []) + list(g1.node) + p_nodes, list(g1.initializer) + p_inits
    for g in range(2, G + 1):
        gg = _prefixed(group_models[g - 1], "g%d/" % g)
        p_inits, p_nodes, contrib = part(g, gg.output[0].name)
        then_out, else_out = "acc%d_then" % g, "acc%d_else" % g
        then_g = helper.make_graph(list(gg.node) + p_nodes + [helper.make_node("Add", [acc, contrib], [then_out],
                                                                               name="g%d/sum" % g)],
                                   "group%d" % g, [], [out_t(then_out)], initializer=list(gg.initializer) + p_inits)
        else_g = helper.make_graph([helper.make_node("Identity", [acc], [else_out], name="g%d/skip" % g)],
                                   "skip%d" % g, [], [out_t(else_out)])
        inits.append(numpy_helper.from_array(np.array([g], np.int32), "const/level%d" % g))
        nodes.append(helper.make_node("GreaterOrEqual", ["level", "const/level%d" % g], ["run%d" % g],
                                      name="level>=%d" % g))
        nodes.append(helper.make_node("If", ["run%d" % g], ["acc%d" % g], name="if_group%d" % g,
                                      then_branch=then_g, else_branch=else_g))
        acc = "acc%d" % g
    if weighted or heads:
        inits += w_inits if weighted else []
        nodes.append(helper.make_node("Identity", [acc], ["logits"], name="logits"))
    else:  # byte for byte the graph of the shipped (uniform) bundles
        inits += w_inits[1:] + w_inits[:1]
        nodes += w_nodes + [helper.make_node("Mul", [acc, "scale"], ["logits"], name="scaled")]
    graph = helper.make_graph(
        nodes, "dynn_all_levels",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N"] + list(input_shape)),
         helper.make_tensor_value_info("level", TensorProto.INT32, [1])],
        [out_t("logits")], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="dynn")
    model.ir_version = group_models[0].ir_version
    onnx.checker.check_model(model, full_check=True)
    return model
