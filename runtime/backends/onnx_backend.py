"""ONNX Runtime: one graph, the level is an input; `If` nodes skip the groups above it. A bundle built with
int8 levels also carries model_int8.onnx (the same graph, each group quantized to QDQ int8 by onnxruntime's
own tool: compile/quantize_onnx.py); precision picks the file."""
import os

import numpy as np

from runtime.backends.base import Backend
from runtime.errors import RuntimeUserError


class OnnxBackend(Backend):
    name = "onnx"
    batch_sizes = None
    # InferenceSession.run may be called concurrently on one session (ONNX Runtime's threading contract);
    # set_threads swaps in a new session, and a call in flight keeps the one it started with.
    thread_safe = True

    def __init__(self, bundle_dir, manifest, threads=None):
        super(OnnxBackend, self).__init__(bundle_dir, manifest, threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUserError("onnxruntime is not installed: pip install onnxruntime")
        self.ort = ort
        eng = manifest["engines"]["onnx"]
        self.precisions = list(eng.get("precisions") or ["fp32"])
        self.paths = {"fp32": os.path.join(bundle_dir, eng["file"])}
        if "int8" in self.precisions:
            self.paths["int8"] = os.path.join(bundle_dir, eng["int8"]["file"])
        self.precision, self.path = "fp32", self.paths["fp32"]
        self.in_name, self.out_name, self.level_name = eng["input"], eng["output"], eng["level_input"]
        self._levels, self._sessions = {}, {}
        self._open(threads)

    def set_precision(self, precision):
        """Switch files: the first switch to a precision opens its session (milliseconds), later ones are free."""
        if precision not in self.precisions:
            raise RuntimeUserError("precision %r is not in this bundle's ONNX engine (it carries %s); rebuild "
                                   "with python build.py --target T --precision both" % (precision,
                                                                                          ", ".join(self.precisions)))
        if precision != self.precision:
            self.precision, self.path = precision, self.paths[precision]
            self._open(self.threads)

    def _open(self, threads):
        key = (self.precision, threads)
        if key in self._sessions:
            self.sess, self.threads = self._sessions[key], threads
            return
        opts = self.ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        # Spinning threads make timings erratic with few cores (../shared/docs/measured.md, ONNX).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.sess = self.ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unexported classes
            # e.g. onnxruntime 1.10 (the last for Python 3.6) reads ONNX opset <= 15 only (issue 10)
            opset = self.manifest["engines"]["onnx"].get("opset")
            raise RuntimeUserError("onnxruntime %s cannot load %s (ONNX opset %s): %s; install a newer "
                                   "onnxruntime or use a bundle built at an opset it reads"
                                   % (self.ort.__version__, self.path, opset, _tail(exc)))
        self.threads = threads
        self._sessions[key] = self.sess

    def set_threads(self, threads):
        if threads != self.threads:
            self._open(threads)

    def run_level(self, x, level):
        lv = self._levels.get(level)
        if lv is None:
            lv = self._levels[level] = np.array([level], np.int32)
        sess = self.sess
        if sess is None:
            raise RuntimeUserError("the model is closed; load the bundle again to run it")
        return sess.run([self.out_name], {self.in_name: x, self.level_name: lv})[0]

    def prepare(self, levels, batch_sizes=(1,)):
        shape = [1] + list(self.manifest["input"]["shape"][1:])
        for k in levels:
            self.run_level(np.zeros(shape, np.float32), k)

    def close(self):
        self.sess, self._sessions = None, {}


def _tail(exc, limit=160):
    """The end of onnxruntime's message (where it says what it supports), on one line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else "..." + text[-limit:]
