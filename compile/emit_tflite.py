"""TFLite emission through litert-torch: one file, one signature per (group, batch size).

Why per group and not per level: XNNPACK packs each signature's weights separately and eagerly, so
per-level signatures would hold 1+2+...+G copies of group 1's packed weights; per-group signatures
hold one, and the runtime sums groups 1..k (../shared/docs/measured.md, TFLite memory).
"""
import logging
import os
import sys
import time
import warnings

import torch

from compile.errors import UserError
from compile.targets import op_version_table
from runtime.backends.tflite_backend import signature_name  # noqa: F401 - the runtime's naming rule, one copy
from runtime.cli import quiet_fds


def _quiet():
    for name in ("absl", "litert_torch", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its per-pass progress lines drown our output


def _import_litert_torch():
    _quiet()
    if "litert_torch" not in sys.modules:
        with quiet_fds((2,)):  # native libraries loaded by litert-torch print load notices on fd 2
            import litert_torch  # noqa: F401
    return sys.modules["litert_torch"]


def convert_modules(named, shape_of_batch, path, quantizer=None):
    """named: [(signature, module, batch)]; writes one .tflite holding every signature. quantizer: the
    PT2E quantizer the int8 modules were prepared with (litert-torch folds their q/dq pairs with it)."""
    litert_torch = _import_litert_torch()
    builder = None
    for sig, module, batch in named:
        args = (torch.zeros(shape_of_batch(batch)),)
        builder = litert_torch.signature(sig, module, args) if builder is None else builder.signature(sig, module, args)
    t = time.time()
    kwargs = {}
    if quantizer is not None:
        from litert_torch.quantize.quant_config import QuantConfig
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's pytree deprecations and PT2E notices, not ours to fix
        edge = builder.convert(**kwargs)
    edge.export(path)
    return time.time() - t


def emit_grouped(paths, input_shape, batch_sizes, path, precisions=("fp32",), calib=None):
    """One signature per (group, batch, precision). int8 signatures are each group quantized on its own
    (compile/quantize.py) from `calib`, normalised float calibration images."""
    named, qz = [], None
    if "fp32" in precisions:
        named += [(signature_name(g + 1, b), p, b, "fp32") for g, p in enumerate(paths) for b in batch_sizes]
    if "int8" in precisions:
        from compile.quantize import quantize_path, quantizer
        qz = quantizer()
        named += [(signature_name(g + 1, b, "int8"), quantize_path(p, b, calib, qz), b, "int8")
                  for g, p in enumerate(paths) for b in batch_sizes]
    seconds = convert_modules([n[:3] for n in named], lambda b: (b,) + tuple(input_shape), path, qz)
    sigs = {}
    for sig, _, b, prec in named:
        sigs[sig] = {"group": int(sig[5:].split("_")[0]), "batch": b}
        if prec != "fp32":
            sigs[sig]["precision"] = prec  # float signatures keep the old record, which old runtimes read
    if qz is not None:
        _record_grids(path, sigs)
    return sigs, seconds


def _record_grids(path, sigs):
    """Each int8 signature's input and output grid [scale, zero point], read back from the file: the
    runtime takes them from the manifest, since SignatureRunner.get_input_details is missing from some of
    the old tflite-runtime releases the ARM targets promise to load on."""
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path)
    for name, rec in sigs.items():
        if rec.get("precision") == "int8":
            runner = it.get_signature_runner(name)
            (idet,), (odet,) = runner.get_input_details().values(), runner.get_output_details().values()
            rec["input_quantization"] = [float(idet["quantization"][0]), int(idet["quantization"][1])]
            rec["output_quantization"] = [float(odet["quantization"][0]), int(odet["quantization"][1])]


def read_operators(path):
    """[(name, version)] of the builtin operators the file uses, read with LiteRT's flatbuffer schema."""
    from ai_edge_litert import schema_py_generated as schema
    with open(path, "rb") as f:
        buf = f.read()
    model = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = set()
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        ops.add((names.get(code, "CUSTOM_%d" % code), oc.Version()))
    return sorted(ops)


def _vkey(v):
    from packaging.version import Version
    return Version(v)


def required_runtime(ops):
    """The lowest TFLite runtime that has every operator version in `ops`, and the op that sets it."""
    table = op_version_table()
    need, why = "1.5.0", None
    for name, version in ops:
        v = table.get(name, {}).get(str(version))
        if v is None:
            raise UserError("the emitted .tflite uses operator %s version %d, which compile/targets/"
                            "tflite_op_versions.json does not know; add its minimum runtime there (from "
                            "TensorFlow's runtime_version.cc) before shipping" % (name, version))
        if _vkey(v) > _vkey(need):
            need, why = v, "%s v%d" % (name, version)
    return need, why


def check_runtime(ops, target):
    need, why = required_runtime(ops)
    have = target.get("tflite_min_runtime")
    if have and _vkey(need) > _vkey(have):
        raise UserError("the .tflite needs TFLite runtime %s (for %s) but target %s promises to load on %s; "
                        "raise tflite_min_runtime in compile/targets/%s.json or change the model"
                        % (need, why, target["name"], have, target["name"]))
    return need
