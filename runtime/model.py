"""The object a board application holds: one bundle, every level ready, switchable in microseconds.

Thread safety (docs/runtime.md): one Model may be shared by any number of threads. TFLite and ONNX Runtime
backends are safe by themselves (one interpreter per calling thread; one session); calls into an engine
that is not (Backend.thread_safe False) are serialised by one lock per Model, which set_threads and close
also take. After close every call fails with one line.
"""
import numbers
import os
import threading
import time

import numpy as np

from runtime.bundle import read_manifest, verify_files
from runtime.errors import RuntimeUserError
from runtime.placement import freeze

BACKENDS = ("tflite", "onnx", "tensorrt")
_KEEP = object()  # set_operating_point(placement=...) left out: keep the current one


def _backend_class(name):
    if name == "tflite":
        from runtime.backends.tflite_backend import TFLiteBackend
        return TFLiteBackend
    if name == "onnx":
        from runtime.backends.onnx_backend import OnnxBackend
        return OnnxBackend
    if name == "tensorrt":
        from runtime.trt.backend import TensorRTBackend
        return TensorRTBackend
    raise RuntimeUserError("unknown backend %r; choose one of: auto, %s" % (name, ", ".join(BACKENDS)))


def _auto_backend(manifest):
    """The bundle's own engine first (TensorRT or TFLite), the portable ONNX file as the fallback."""
    own = manifest["target"]["engine"]
    return [own, "onnx"] if own != "onnx" else ["onnx"]


def check_threads(threads, sysfs_root="/"):
    """None (the engine's default) or an integer 1..the board's online cores (issue 10: a million threads
    were accepted and crashed the process on close). Not the current affinity: set_operating_point may be
    moving to a bigger cluster than the one the process is pinned to now."""
    if threads is None:
        return None
    from runtime.platform import online_cpus
    cores = max(len(online_cpus(sysfs_root)), 1)
    if not isinstance(threads, numbers.Integral) or isinstance(threads, bool) or not 1 <= threads <= cores:
        raise RuntimeUserError("threads must be an integer from 1 to %d (this board's online CPU cores), got %r"
                               % (cores, threads))
    return int(threads)


def _chunks(n, sizes):
    """Split a batch of n into engine batch sizes: largest that fits, padding a small tail up if cheaper."""
    out, i = [], 0
    sizes = sorted(sizes)
    while i < n:
        r = n - i
        fit = max(b for b in sizes if b <= r)
        up = [b for b in sizes if b >= r]
        if fit < r and up and min(up) <= 4 * r and fit == 1:
            out.append((i, r, min(up)))  # pad r rows up to one bigger call
            i += r
        else:
            out.append((i, fit, fit))
            i += fit
    return out


class Model(object):
    def __init__(self, bundle_dir, manifest, backend, board=None, sysfs_root="/", state_dir=None, dvfs=True):
        self.bundle_dir, self.manifest, self.backend = bundle_dir, manifest, backend
        self.levels = [lv["level"] for lv in manifest["levels"]]
        self.accuracy = {lv["level"]: lv.get("test_accuracy") for lv in manifest["levels"]}
        # int8 levels were measured through the int8 engine at build time, where the test set was at hand
        self.accuracy_int8 = {lv["level"]: lv.get("test_accuracy_int8") for lv in manifest["levels"]}
        onnx8 = manifest["engines"].get("onnx", {}).get("int8")
        if backend.name == "onnx" and onnx8:  # onnxruntime's int8 graph is its own engine, with its own accuracy
            self.accuracy_int8 = dict(zip(self.levels, onnx8["test_accuracy"]))
        self.level = self.levels[-1]
        inp = manifest["input"]
        self.input_shape = tuple(inp["shape"][1:])
        self.num_classes = manifest["output"]["shape"][1]
        self.class_names = manifest["model"].get("class_names")
        norm = inp["normalisation"]
        scale = np.float32(norm["scale"])
        mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
        # (u8 * scale - mean) / std == u8 * a + b, with a, b per channel: one fused multiply-add
        self._pre_a = (scale / std).reshape(1, -1, 1, 1).astype(np.float32)
        self._pre_b = (-mean / std).reshape(1, -1, 1, 1).astype(np.float32)
        self._platform_args = dict(board=board, sysfs_root=sysfs_root, state_dir=state_dir, dvfs=dvfs)
        self._platform = None
        self._lock = threading.RLock()
        self._closed = False
        self._pool, self._placement, self._placements = None, None, {}  # issue 14: runtime.workers

    # ---- levels ----------------------------------------------------------------------------------
    def _check_level(self, level):
        # 2.0 == 2 and True == 1 as dict keys: only real integers name a level.
        if not isinstance(level, numbers.Integral) or isinstance(level, bool) or level not in self.accuracy:
            raise RuntimeUserError("level %r does not exist; this bundle has levels %s (integers)"
                                   % (level, self.levels))
        return int(level)

    def set_level(self, level):
        self.level = self._check_level(level)
        if self._placement is not None and self._placement.level != self.level:
            self._placement = None  # a placement belongs to its level; another level runs on one PE

    # ---- data ------------------------------------------------------------------------------------
    def preprocess(self, images):
        """uint8 [N, H, W, C] RGB images -> float32 [N, C, H, W] model input, by the manifest."""
        images = np.asarray(images)
        c, h, w = self.input_shape
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, c):
            raise RuntimeUserError("preprocess expects uint8 images of shape [N, %d, %d, %d] (RGB, NHWC); got %s %s"
                                   % (h, w, c, images.dtype, list(images.shape)))
        x = images.transpose(0, 3, 1, 2).astype(np.float32)
        x *= self._pre_a
        x += self._pre_b
        return x

    def infer(self, x, level=None):
        """float32 [N, C, H, W] -> float32 [N, classes] logits at the current (or given) level."""
        level = self.level if level is None else self._check_level(level)
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise RuntimeUserError("infer expects a float32 array [N, %s] (use model.preprocess(images)); got %s %s"
                                   % (", ".join(map(str, self.input_shape)), getattr(x, "dtype", type(x).__name__),
                                      list(getattr(x, "shape", []))))
        n = x.shape[0]
        if self.backend.thread_safe:
            self._check_open()
            return self._infer(x, n, level)
        with self._lock:
            self._check_open()
            return self._infer(x, n, level)

    def _check_open(self):
        if self._closed:
            raise RuntimeUserError("this model of %s is closed; load the bundle again to run it" % self.bundle_dir)

    def _infer(self, x, n, level):
        if n == 0:
            return np.zeros((0, self.num_classes), np.float32)
        plan = self._placement
        if plan is not None and plan.level == level:
            run, sizes = plan.run, plan.batch_sizes
        else:
            run, sizes = self.backend.run_level, self.backend.batch_sizes
        if sizes is None or n in sizes:  # None: the engine takes any batch (ONNX Runtime, TensorRT)
            return run(np.ascontiguousarray(x), level)
        out = np.empty((n, self.num_classes), np.float32)
        for start, rows, batch in _chunks(n, sizes):
            part = x[start:start + rows]
            if batch != rows:
                part = np.concatenate([part, np.zeros((batch - rows,) + self.input_shape, np.float32)])
            out[start:start + rows] = run(np.ascontiguousarray(part), level)[:rows]
        return out

    def predict(self, images, level=None):
        """uint8 images -> predicted class indices."""
        return self.infer(self.preprocess(images), level).argmax(1)

    # ---- platform --------------------------------------------------------------------------------
    @property
    def platform(self):
        """The board's DVFS, task-mapping and power control (opened on first use)."""
        if self._platform is None:
            from runtime.platform import Platform
            self._platform = Platform.open(**self._platform_args)
        return self._platform

    def use_platform(self, platform):
        """Use another Model's Platform: engines of one process must share one (it holds the clock lock)."""
        if self._platform is not None and self._platform is not platform:
            raise RuntimeUserError("this model already controls the board through its own platform; share one "
                                   "before the first set_operating_point")
        self._platform = platform

    @property
    def precisions(self):
        """The precisions the running engine carries (issue 13): ["fp32"], ["int8"] or both."""
        return list(getattr(self.backend, "precisions", ["fp32"]))

    @property
    def precision(self):
        """The precision levels run at now. Only an engine that carries several switches it (TFLite, ONNX); a
        TensorRT engine's own build precision (fp16) is not an operating-point choice."""
        return self.backend.precision if hasattr(self.backend, "precisions") else "fp32"

    def accuracy_of(self, level, precision="fp32"):
        """The recorded test accuracy of a level at a precision (None where none was measured)."""
        return (self.accuracy if precision == "fp32" else self.accuracy_int8).get(level)

    def _check_precision(self, precision):
        if precision not in self.precisions:
            raise RuntimeUserError("precision %r is not carried by this bundle's %s engine (it has %s); build it "
                                   "with --precision both for int8" % (precision, self.backend.name,
                                                                        ", ".join(self.precisions)))
        return precision

    def set_operating_point(self, level=None, cluster=None, cpu_freq_khz=None, gpu_freq_hz=None, threads=None,
                            placement=_KEEP, precision=None):
        """Switch level, task mapping (cluster affinity, threads), frequencies, placement and precision in
        one call.

        placement (issue 14, runtime/placement.py): which groups of the level run on which PE, each PE with
        its own worker thread and engine; None = all on the Model's engine (the default). Left out, the
        current placement stays while the level does; a new level without one runs on one PE.
        precision (issue 13): "fp32" or "int8", among model.precisions; left out, it stays."""
        self._check_open()
        if level is not None:
            level = self._check_level(level)
        if precision is not None:
            precision = self._check_precision(precision)
        threads = check_threads(threads, self._platform_args["sysfs_root"])
        if cluster is not None and placement is _KEEP:
            placement = None  # pinning the process to a cluster runs the level there, on one PE
        plan = self._place(self.level if level is None else level, placement)
        if cluster is not None and plan is not None:
            raise RuntimeUserError("cluster= pins the whole process, a placement pins each PE's worker: give "
                                   "one of them (placement=None for cluster=)")
        name = None
        if cluster is not None:
            name = self.platform.cluster(cluster)  # "big"/"little" aliases -> the board's cluster name
            self.platform.pin(name)
            if self._pool is not None:
                self._pool.epoch += 1  # the pin reached the PE workers too: they take their CPUs back
            if threads is None:
                threads = self.platform.cores(name)
        if cpu_freq_khz is not None:
            if name is None:
                raise RuntimeUserError("cpu_freq_khz needs cluster=...: frequencies are set per cluster (%s)"
                                       % ", ".join(self.platform.clusters))
            self.platform.set_cpu_freq(name, int(cpu_freq_khz))
        if gpu_freq_hz is not None:
            self.platform.set_gpu_freq(int(gpu_freq_hz))
        if threads is not None and hasattr(self.backend, "set_threads"):
            with self._lock:
                self._check_open()
                self.backend.set_threads(threads)
        if precision is not None and precision != self.precision:
            self.backend.set_precision(precision)
        if level is not None:
            self.level = level
        self._placement = plan

    def _place(self, level, placement):
        """The Plan the call leaves in force: kept, dropped (None) or parsed and bound to workers."""
        if placement is _KEEP:
            current = self._placement
            return current if current is not None and current.level == level else None
        if placement is None:
            return None
        try:
            key = (level, freeze(placement))
            parts = self._placements.get(key)
        except TypeError:  # unhashable values: parse() says what is wrong with them
            key, parts = None, None
        if parts is None:
            from runtime.bundle import level_heads, level_weights
            from runtime.placement import BoardView, parse
            from runtime.platform import online_cpus
            board = BoardView(online_cpus(self._platform_args["sysfs_root"]), lambda: self.platform)
            engine = self.backend.name if self.backend.name != "tensorrt" else (
                "tflite" if "tflite" in self.manifest["engines"] else "onnx")
            parts = parse(placement, level, board, engine, level_weights(self.manifest),
                          self.manifest["model"]["level_scale"], sorted(self.manifest["engines"]),
                          level_heads(self.manifest))
            if key is not None:
                self._placements[key] = parts
        if self._pool is None:
            from runtime.workers import Pool
            self._pool = Pool(self)
        return self._pool.plan(level, parts)

    @property
    def placement(self):
        """The placement in force as plain JSON (runtime.placement.describe), or None: one PE."""
        if self._placement is None or self._placement.level != self.level:
            return None
        from runtime.placement import describe
        return describe(self._placement.parts)

    # ---- life cycle ------------------------------------------------------------------------------
    def close(self):
        """Restore the board, release the engine; safe to call twice. Calls in flight into a thread-safe
        engine finish on the interpreter or session they hold; others are waited for (the lock)."""
        with self._lock:
            self._closed = True
            try:
                if self._pool is not None:
                    self._pool.close()
                if self._platform is not None:
                    self._platform.close()
            finally:
                self._platform = None
                if self.backend is not None:
                    self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<Model %s target=%s backend=%s levels=%s level=%d>" % (
            self.bundle_dir, self.manifest["target"]["name"], self.backend.name, self.levels, self.level)


def _check_board(bundle_dir, manifest, board, sysfs_root):
    """Refuse a bundle made for another board (a Nano bundle on an XU3); host bundles run anywhere."""
    want = manifest["target"].get("board")
    if not want:
        return
    from runtime.platform import detect_board, load_board
    from runtime.platform.sysfs import Sysfs
    here = load_board(board) if board else detect_board(Sysfs(sysfs_root))
    if here is not None and not getattr(here, "generic", False) and here.name != want:
        raise RuntimeUserError("bundle %s is for target %s (board %s) but this board is %s; build and deploy a "
                               "bundle for this board (python build.py --list-targets)"
                               % (bundle_dir, manifest["target"]["name"], want, here.name))


def load(bundle_dir, backend="auto", threads=None, verify=True, target=None, prepare=True,
         board=None, sysfs_root="/", state_dir=None, dvfs=True):
    """Open a bundle: check its manifest and checksums, pick the engine binding, warm every level.

    target: refuse a bundle built for another target (e.g. target="xu3").
    board/sysfs_root/state_dir/dvfs: passed to runtime.platform when set_operating_point first needs it.
    """
    bundle_dir = os.fspath(bundle_dir) if hasattr(os, "fspath") else bundle_dir
    if backend != "auto" and backend not in BACKENDS:
        raise RuntimeUserError("unknown backend %r; choose one of: auto, %s" % (backend, ", ".join(BACKENDS)))
    threads = check_threads(threads, sysfs_root)
    manifest = read_manifest(bundle_dir)
    if target is not None and manifest["target"]["name"] != target:
        raise RuntimeUserError("bundle %s was built for target %s, not %s; build one with: "
                               "python build.py --target %s" % (bundle_dir, manifest["target"]["name"], target, target))
    _check_board(bundle_dir, manifest, board, sysfs_root)
    if verify:
        verify_files(bundle_dir, manifest)
    names = _auto_backend(manifest) if backend == "auto" else [backend]
    errors = []
    for name in names:
        if name != "tensorrt" and name not in manifest["engines"]:
            errors.append("%s: the bundle has no %s engine" % (name, name))
            continue
        try:
            be = _backend_class(name)(bundle_dir, manifest, threads)
            break
        except RuntimeUserError as exc:
            errors.append(str(exc))
    else:
        raise RuntimeUserError("cannot run bundle %s: %s" % (bundle_dir, "; ".join(errors)))
    model = Model(bundle_dir, manifest, be, board, sysfs_root, state_dir, dvfs)
    if prepare:
        t = time.time()
        be.prepare(model.levels)
        model.prepare_seconds = time.time() - t
    return model
