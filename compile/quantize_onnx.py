"""The int8 ONNX peer (issue 13): each group's ONNX graph quantized on its own by onnxruntime's own tool.

onnxruntime.quantization.quantize_static in QDQ format (QuantizeLinear/DequantizeLinear pairs around the
float ops, which onnxruntime fuses into its integer kernels), per-channel symmetric int8 weights, int8
activations (symmetric, as ARM kernels prefer; the same scheme as the TFLite int8 signatures), calibrated
with MinMax on the same seeded training images as those (compile/quantize.py). Each group is quantized
alone, then the int8 group graphs are composed into one all-levels graph exactly like the float ones
(compile/emit_onnx.compose_levels), so level k still adds up groups 1..k. Nothing here edits a graph by hand.
"""
import os
import tempfile

import numpy as np

CALIBRATION_BATCH = 32


def _reader(calib, batch):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"input": np.ascontiguousarray(calib[i:i + batch])} for i in range(0, len(calib), batch)])

        def get_next(self):
            return next(self._it, None)
    return Reader()


def quantize_group_models(group_models, calib):
    """[int8 QDQ ModelProto of each group]; calib: float32 normalised images [n, C, H, W]."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from runtime.cli import quiet_fds
    out = []
    with tempfile.TemporaryDirectory(prefix="dynn-qdq-") as tmp:
        for g, model in enumerate(group_models, 1):
            src, dst = os.path.join(tmp, "group%d.onnx" % g), os.path.join(tmp, "group%d_int8.onnx" % g)
            onnx.save(model, src)
            with quiet_fds((2,)):  # its advice to run shape pre-processing first is for models with dynamic shapes
                quantize_static(src, dst, _reader(calib, CALIBRATION_BATCH), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            q = onnx.load(dst)
            q.producer_name = "dynn"
            out.append(q)
    return out


def output_step(model):
    """The quantization step of a QDQ group graph's output (the scale of the DequantizeLinear that makes it)."""
    from onnx import numpy_helper
    name = model.graph.output[0].name
    node = [n for n in model.graph.node if name in n.output][0]
    if node.op_type != "DequantizeLinear":
        return None
    inits = {t.name: t for t in model.graph.initializer}
    return float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])


def level_outputs(path, x, levels, threads=None, batch=500):
    """{level: logits} of an all-levels ONNX file on float inputs x, through onnxruntime on this host."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    out = {}
    for k in levels:
        lv = np.array([k], np.int32)
        out[k] = np.concatenate([sess.run(["logits"], {"input": x[i:i + batch], "level": lv})[0]
                                 for i in range(0, len(x), batch)])
    return out
