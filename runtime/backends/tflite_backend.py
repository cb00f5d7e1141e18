"""TFLite (XNNPACK) through ai_edge_litert, tflite_runtime or tensorflow.lite, whichever is installed.

The file holds one signature per (group, batch size); level k runs groups 1..k and combines them, which
keeps one packed copy of each weight in XNNPACK (../shared/docs/measured.md). Signature runners need
tflite-runtime 2.7 or later (../shared/docs/boards.md 3.3).

Not thread-safe by itself: the signature runners of one interpreter share its tensors, so two concurrent
calls overwrite each other's input (issue 10). runtime.model.Model serialises calls (thread_safe = False).
"""
import os

import numpy as np

from runtime.backends.base import Backend
from runtime.bundle import level_weights
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
    thread_safe = False

    def __init__(self, bundle_dir, manifest, threads=None):
        super(TFLiteBackend, self).__init__(bundle_dir, manifest, threads)
        eng = manifest["engines"].get("tflite")
        if not eng:
            raise RuntimeUserError("bundle %s has no TFLite engine (target %s); use backend='onnx' or a "
                                   "TFLite target's bundle" % (bundle_dir, manifest["target"]["name"]))
        self.path = os.path.join(bundle_dir, eng["file"])
        self.batch_sizes = sorted(eng["batch_sizes"])
        self.scale = [float(s) for s in manifest["model"]["level_scale"]]
        self.weights = level_weights(manifest)
        self.cls, self.binding = interpreter_class()
        self._by_threads = {}
        self.threads, self.interp = None, None
        self._open(threads)

    def _open(self, threads):
        # One interpreter per thread count, kept: switching threads back and forth costs a dict lookup,
        # not a re-open and re-pack (milliseconds). Each thread count used holds its own packed weights.
        if self.interp is not None:
            self._by_threads[self.threads] = (self.interp, self._io, self._runners)
        if threads in self._by_threads:
            self.interp, self._io, self._runners = self._by_threads[threads]
            self.threads = threads
            return
        kwargs = {"model_path": self.path}
        if threads:
            kwargs["num_threads"] = int(threads)
        try:
            interp = self.cls(**kwargs)
        except ValueError as exc:
            raise RuntimeUserError("%s could not load %s (%s)" % (self.binding, self.path, exc))
        if not hasattr(interp, "get_signature_runner"):
            raise RuntimeUserError("%s is too old: it has no signature runners (needs tflite-runtime 2.7 or "
                                   "later, boards.md 3.3); install a newer one" % self.binding)
        self.interp, self._io, self._runners, self.threads = interp, interp.get_signature_list(), {}, threads

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

    def run_level(self, x, level):
        w = self.weights[level - 1]
        if w is None:
            # The mean of the groups, in the order and precision the golden vectors were made with.
            out = self._call(1, x)
            for g in range(2, level + 1):
                out = out + self._call(g, x)
            if level > 1:
                out *= self.scale[level - 1]
            return out
        out = self._call(1, x) * w[0]
        for g in range(2, level + 1):
            out += self._call(g, x) * w[g - 1]
        return out

    def close(self):
        self._runners, self._by_threads = {}, {}
        self.interp = None
