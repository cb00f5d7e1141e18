"""TFLite (XNNPACK) through ai_edge_litert, tflite_runtime or tensorflow.lite, whichever is installed.

The file holds one signature per (group, batch size); level k runs groups 1..k and combines them, which
keeps one packed copy of each weight in XNNPACK (../shared/docs/measured.md). Signature runners need
tflite-runtime 2.7 or later (../shared/docs/boards.md 3.3).

Threads: the signature runners of one interpreter share its tensors, so two concurrent calls on one
interpreter overwrite each other's input (issue 10: 25% wrong results). Each calling thread gets its own
interpreter instead of all of them queueing on one lock: 4 threads on 2 cores ran 977 calls/s against 436
(one lock, 1 engine thread) and 454 (one lock, 2 engine threads), for about 13 MiB of packed weights and a
3-7 ms first call per thread (docs/runtime.md, "Threads"). A thread's interpreters go when the thread ends.
"""
import os
import threading
import weakref

import numpy as np

from runtime.backends.base import Backend, Combiner
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


def quantize(x, qparams):
    """float32 -> int8 on a tensor's grid (scale, zero point): what an int8 signature takes."""
    scale, zero = qparams
    q = np.divide(x, np.float32(scale))  # one temporary, rounded and clamped in place
    np.rint(q, out=q)
    q += np.float32(zero)
    np.clip(q, -128, 127, out=q)
    return q.astype(np.int8)


def dequantize(q, qparams):
    scale, zero = qparams
    out = q.astype(np.float32)
    out -= np.float32(zero)
    out *= np.float32(scale)
    return out


def signature_name(group, batch, precision="fp32"):
    """compile/emit_tflite.py's names: float signatures keep the old ones, int8 adds a suffix."""
    return "group%d_b%d" % (group, batch) + ("" if precision == "fp32" else "_" + precision)


class _Engine(object):
    """One interpreter and its signature runners; used by one thread only."""

    def __init__(self, interp, records):
        self.interp, self.io, self.runners, self.records = interp, interp.get_signature_list(), {}, records

    def call(self, group, x, precision="fp32", quantized=None):
        """Group `group`'s output for x. quantized: a dict the caller keeps for one input, so that the
        groups of a level on the same int8 input grid (the usual case: one calibration set) quantize x once."""
        key = (group, x.shape[0], precision)
        r = self.runners.get(key)
        if r is None:
            sig = signature_name(*key)
            runner = self.interp.get_signature_runner(sig)
            iname, oname = self.io[sig]["inputs"][0], self.io[sig]["outputs"][0]
            qin = qout = None
            if precision == "int8":  # int8 in and out, on the grids the compiler read from the file
                qin = tuple(self.records[sig]["input_quantization"])
                qout = tuple(self.records[sig]["output_quantization"])
            r = self.runners[key] = (runner, iname, oname, qin, qout)
        runner, iname, oname, qin, qout = r
        if qin is None:
            return runner(**{iname: x})[oname]
        xq = None if quantized is None else quantized.get(qin)
        if xq is None:
            xq = quantize(x, qin)
            if quantized is not None:
                quantized[qin] = xq
        return dequantize(runner(**{iname: xq})[oname], qout)


class _ThreadState(object):
    """A thread's engines by engine thread count, kept so that switching threads back is a dict lookup."""
    __slots__ = ("engines", "__weakref__")

    def __init__(self):
        self.engines = {}


class TFLiteBackend(Backend):
    name = "tflite"
    thread_safe = True  # by one interpreter per calling thread

    def __init__(self, bundle_dir, manifest, threads=None):
        super(TFLiteBackend, self).__init__(bundle_dir, manifest, threads)
        eng = manifest["engines"].get("tflite")
        if not eng:
            raise RuntimeUserError("bundle %s has no TFLite engine (target %s); use backend='onnx' or a "
                                   "TFLite target's bundle" % (bundle_dir, manifest["target"]["name"]))
        self.path = os.path.join(bundle_dir, eng["file"])
        self.batch_sizes = sorted(eng["batch_sizes"])
        self.precisions = list(eng.get("precisions") or ["fp32"])
        self.precision = "fp32" if "fp32" in self.precisions else self.precisions[0]
        self.combiner = Combiner.from_manifest(manifest)
        self.cls, self.binding = interpreter_class()
        self._local, self._states, self._states_lock = threading.local(), weakref.WeakSet(), threading.Lock()
        self._closed = False
        self._engine()  # open it now: a file the binding refuses fails at load, not at the first infer

    def _open(self, threads):
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
        return _Engine(interp, self.manifest["engines"]["tflite"]["signatures"])

    def _state(self):
        st = getattr(self._local, "state", None)
        if st is None:
            st = self._local.state = _ThreadState()
            with self._states_lock:
                self._states.add(st)
        return st

    def _engine(self, threads=None):
        """The calling thread's engine for the current (or given) thread count, opened on first use."""
        if self._closed:
            raise RuntimeUserError("the model is closed; load the bundle again to run it")
        threads = self.threads if threads is None else threads
        engines = self._state().engines
        eng = engines.get(threads)
        if eng is None:
            eng = engines[threads] = self._open(threads)
        return eng

    @property
    def interp(self):
        """The calling thread's interpreter (for tools that time the bare engine)."""
        return self._engine().interp

    def set_precision(self, precision):
        """Switch the signatures levels run on: the int8 and float32 ones share nothing but the file, so
        the first switch packs the other precision's weights (prepare() does it ahead)."""
        if precision not in self.precisions:
            raise RuntimeUserError("precision %r is not in this bundle's TFLite engine (it carries %s); rebuild "
                                   "with python build.py --target T --precision both" % (precision,
                                                                                          ", ".join(self.precisions)))
        self.precision = precision

    def set_threads(self, threads):
        """Threads are fixed per interpreter: the first switch to a thread count opens and warms another
        interpreter in this thread (milliseconds); later switches to it are free. Calls in flight in other
        threads finish on the interpreter they started with."""
        if threads != self.threads:
            warm = sorted(self._engine().runners)
            new = self._engine(threads)
            for g, b, p in warm:
                if (g, b, p) not in new.runners:
                    self._warm(new, g, b, p)
            self.threads = threads

    def _warm(self, eng, group, batch, precision):
        eng.call(group, np.zeros([batch] + list(self.manifest["input"]["shape"][1:]), np.float32), precision)

    def prepare(self, levels, batch_sizes=(1,), precisions=None):
        """Pack the weights of `levels` in the calling thread's interpreter (XNNPACK packs on a signature's
        first call): do it now, not at the first switch. Other threads pack theirs on their first call.
        Every precision the file carries by default, so that switching precision is free too."""
        eng = self._engine()
        for p in precisions or self.precisions:
            for g in range(1, max(levels) + 1):
                for b in batch_sizes:
                    self._warm(eng, g, b, p)

    def contributions(self, x, groups, threads=None, precision=None):
        """[(group, logits)] of `groups` from the calling thread's interpreter at `threads` engine threads
        (the current count when None): runtime.workers runs a placement's groups through this."""
        call, p, quantized = self._engine(threads).call, precision or self.precision, {}
        return [(g, call(g, x, p, quantized)) for g in groups]

    def run_level(self, x, level):
        return self.combiner(self.contributions(x, range(1, level + 1)), level)

    def close(self):
        self._closed = True
        with self._states_lock:
            for st in list(self._states):
                st.engines.clear()
