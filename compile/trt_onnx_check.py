"""Host-side check that TensorRT 8.2's ONNX parser (the Jetson Nano's) can import a graph we emit.

The table, compile/targets/tensorrt82_onnx_ops.json, is onnx-tensorrt 8.2-GA's docs/operators.md; here
we enforce its 'supported' column and the restrictions that can bite the graphs this compiler emits
(2D pooling/convolution, constant weights, no pooling indices), so that an architecture the Nano
cannot build is refused on the host with one line instead of failing on the board.
"""
import json
import os

from compile.errors import UserError
from compile.targets import TARGET_DIR

TABLE = os.path.join(TARGET_DIR, "tensorrt82_onnx_ops.json")
SOURCE = "onnx-tensorrt 8.2-GA docs/operators.md"


def load_table():
    with open(TABLE) as f:
        return json.load(f)


def _nodes(graph, outer=()):
    """(node, names of constants visible to it) for every node, If/Loop branches included."""
    consts = set(outer) | {t.name for t in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for n in graph.node:
        yield n, consts
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                for item in _nodes(g, consts):
                    yield item


def _restriction(node, consts):
    """Why the parser would refuse this node, or None."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type in ("Conv", "MaxPool", "AveragePool") and "kernel_shape" in attrs \
            and len(attrs["kernel_shape"].ints) not in (2, 3):
        return "only 2D or 3D %s is supported" % node.op_type
    if node.op_type == "Conv" and node.input[1] not in consts:
        return "Conv weights must be an initializer"
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        return "the MaxPool Indices output is unsupported"
    if node.op_type in ("Squeeze", "Unsqueeze") and len(node.input) > 1 and node.input[1] not in consts:
        return "%s axes must be a constant" % node.op_type
    return None


def check_models(named_models, target_name):
    """named_models: [(file name in the bundle, ModelProto)]. Raises UserError on the first problem."""
    table = load_table()
    ops = table["ops"]
    for fname, model in named_models:
        opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset > table["max_opset"]:
            raise UserError("%s for %s is ONNX opset %d; the TensorRT 8.2 parser supports up to opset %d (%s); "
                            "lower onnx_max_opset in compile/targets/%s.json" % (
                                fname, target_name, opset, table["max_opset"], SOURCE, target_name))
        for node, consts in _nodes(model.graph):
            entry = ops.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if entry is None or not entry["supported"]:
                raise UserError("%s for %s uses ONNX operator %s%s, which the TensorRT 8.2 ONNX parser does not "
                                "support (%s); change the architecture (e.g. relu instead of hardswish)" % (
                                    fname, target_name, node.domain + "." if node.domain else "", node.op_type,
                                    SOURCE))
            why = _restriction(node, consts)
            if why:
                raise UserError("%s for %s: node %s (%s): %s in TensorRT 8.2 (%s); change the architecture"
                                % (fname, target_name, node.name, node.op_type, why, SOURCE))
