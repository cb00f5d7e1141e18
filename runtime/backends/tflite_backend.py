"""TFLite (XNNPACK) through ai_edge_litert, tflite_runtime or tensorflow.lite, whichever is installed.

The file holds one signature per (group, batch size); level k runs groups 1..k and sums, which keeps
one packed copy of each weight in XNNPACK (../shared/docs/measured.md). Signature runners need
tflite-runtime 2.7 or later (../shared/docs/boards.md 3.3).
"""
import os

import numpy as np

from runtime.backends.base import Backend
from runtime.errors import RuntimeUserError


def interpreter_class():
    """(class, binding name) of the first TFLite binding that imports."""
    for mod, name in (("ai_edge_litert.interpreter", "ai_edge_litert"),
                      ("tflite_runtime.interpreter", "tflite_runtime"),
                      ("tensorflow.lite", "tensorflow.lite")):
        try:
            m = __import__(mod, fromlist=["Interpreter"])
            return m.Interpreter, name
        except ImportError:
            continue
    raise RuntimeUserError("no TFLite binding is installed: pip install ai-edge-litert (x86_64/aarch64, "
                           "Python 3.9+) or tflite-runtime (2.7-2.14; the only choice on armv7l boards)")


class TFLiteBackend(Backend):
    name = "tflite"

    def __init__(self, bundle_dir, manifest, threads=None):
        super(TFLiteBackend, self).__init__(bundle_dir, manifest, threads)
        eng = manifest["engines"].get("tflite")
        if not eng:
            raise RuntimeUserError("bundle %s has no TFLite engine (target %s); use backend='onnx' or a "
                                   "TFLite target's bundle" % (bundle_dir, manifest["target"]["name"]))
        self.path = os.path.join(bundle_dir, eng["file"])
        self.signatures = eng["signatures"]
        self.batch_sizes = sorted(eng["batch_sizes"])
        self.scale = [float(s) for s in manifest["model"]["level_scale"]]
        self.cls, self.binding = interpreter_class()
        self._by_threads = {}
        self.threads = None
        self._open(threads)

    def _open(self, threads):
        # One interpreter per thread count, kept: switching threads back and forth costs a dict lookup,
        # not a re-open and re-pack (milliseconds). Each thread count used holds its own packed weights.
        if self.threads is not None and hasattr(self, "interp") and self.interp is not None:
            self._by_threads[self.threads] = (self.interp, self._io, self._runners)
        self.threads = threads
        if threads in self._by_threads:
            self.interp, self._io, self._runners = self._by_threads[threads]
            return
        kwargs = {"model_path": self.path}
        if threads:
            kwargs["num_threads"] = int(threads)
        try:
            self.interp = self.cls(**kwargs)
        except ValueError as exc:
            raise RuntimeUserError("%s could not load %s (%s)" % (self.binding, self.path, exc))
        if not hasattr(self.interp, "get_signature_runner"):
            raise RuntimeUserError("%s is too old: it has no signature runners (needs tflite-runtime 2.7 or "
                                   "later, boards.md 3.3); install a newer one" % self.binding)
        self._io = self.interp.get_signature_list()
        self._runners = {}

    def _runner(self, group, batch):
        key = (group, batch)
        r = self._runners.get(key)
        if r is None:
            sig = "group%d_b%d" % key
            r = self.interp.get_signature_runner(sig)
            self._runners[key] = r = (r, self._io[sig]["inputs"][0], self._io[sig]["outputs"][0])
        return r

    def set_threads(self, threads):
        """Threads are fixed per interpreter: the first switch to a thread count opens and warms another
        interpreter (milliseconds); later switches to it are free."""
        if threads != self.threads:
            warm = sorted(self._runners)
            self._open(threads)
            for g, b in warm:
                if (g, b) not in self._runners:
                    self._warm(g, b)

    def _warm(self, group, batch):
        shape = [batch] + list(self.manifest["input"]["shape"][1:])
        self._call(group, np.zeros(shape, np.float32))

    def _call(self, group, x):
        runner, iname, oname = self._runner(group, x.shape[0])
        return runner(**{iname: x})[oname]

    def prepare(self, levels, batch_sizes=(1,)):
        # XNNPACK packs weights on a signature's first call: do it now, not at the first switch.
        for g in range(1, max(levels) + 1):
            for b in batch_sizes:
                self._warm(g, b)

    def run_group(self, x, group):
        return self._call(group, x)

    def run_level(self, x, level):
        out = self._call(1, x)
        for g in range(2, level + 1):
            out = out + self._call(g, x)
        if level > 1:
            out *= self.scale[level - 1]
        return out

    def close(self):
        self._runners, self._by_threads = {}, {}
        self.interp = None
