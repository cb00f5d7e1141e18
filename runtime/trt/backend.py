"""TensorRT backend: runs the engine(s) that `python -m runtime trt-build` built on this device.

Two engine layouts, named by engine.json's `mode`:
  per-group  (default) groups/group{g}.plan, one per group; level k runs groups 1..k on one stream and
             combines their outputs on the host (runtime.backends.base.Combiner: the manifest's weights or level heads).
  if         model.plan holds every level; inputs `input` [B,C,H,W] and `level` int32 [1].
Each engine has one optimisation profile per carried batch size (engine.json `profiles`); a batch runs on
the profile with the smallest range that holds it, larger batches in chunks of the largest.

Every failure while opening (no or stale engine, missing pycuda, TensorRT refusing a plan, a shape or a
profile) is a TensorRTError with one line, so runtime.load falls back to the bundle's ONNX file.
Neither tensorrt nor a CUDA package is imported until a backend is opened. Python 3.6 compatible.
"""
import contextlib

import numpy as np

from runtime.backends.base import Backend, Combiner
from runtime.bundle import ENGINE_RECORD, read_engine_plans, read_engine_record
from runtime.trt import TensorRTError, build_hint
from runtime.trt.cuda import open_cuda
from runtime.trt.engine_api import ENGINE_API
from runtime.trt.version import api_major, import_tensorrt


class TensorRTBackend(Backend):
    """The engine(s) listed in BUNDLE/engine.json.

    Attributes: mode ("per-group" | "if"), precision, tensorrt_version, gpu (as recorded at build time),
    profiles ([(min, opt, max)] batch), max_batch, record (engine.json), groups, num_classes.
    batch_sizes is None: run_level takes any batch.
    """

    name = "tensorrt"
    batch_sizes = None

    def __init__(self, bundle_dir, manifest, threads=None):
        Backend.__init__(self, bundle_dir, manifest, threads)
        self._engines, self._cuda, self._runtime, self._closed = [], None, None, False
        fix = "rebuild it on this device with: %s" % build_hint(bundle_dir)
        self._fix = fix
        try:
            record = read_engine_record(bundle_dir, manifest, fix)
            blobs = read_engine_plans(bundle_dir, record, fix)
        except TensorRTError:
            raise
        except Exception as e:  # RuntimeUserError from the record reader, or an unreadable file
            raise TensorRTError(" ".join(str(e).split()))
        self.record = record
        self.mode, self.precision = record["mode"], record["precision"]
        self.tensorrt_version, self.gpu = record["tensorrt_version"], record["gpu"]
        self.profiles = [tuple(p) for p in record["profiles"]]
        self.max_batch = self.profiles[-1][2]
        model = manifest["model"]
        self.groups, self.num_classes = int(model["groups"]), int(model["num_classes"])
        self.combiner = Combiner.from_manifest(manifest)
        self.input_name = manifest["input"]["name"]
        self.sample_shape = tuple(int(d) for d in manifest["input"]["shape"][1:])
        self.output_name = manifest["output"]["name"]
        self.level_name = manifest.get("engines", {}).get("onnx", {}).get("level_input", "level")
        if self.mode == "per-group" and len(record["engines"]) != self.groups:
            raise TensorRTError("%s lists %d group engines for a %d-group model; %s"
                                % (ENGINE_RECORD, len(record["engines"]), self.groups, fix))
        trt = import_tensorrt()
        if str(trt.__version__) != self.tensorrt_version:
            raise TensorRTError("the engine in %s was built with TensorRT %s, this is TensorRT %s (engines do not "
                                "move between versions); %s" % (bundle_dir, self.tensorrt_version,
                                                                trt.__version__, fix))
        engine_cls = ENGINE_API[api_major(trt)]
        try:
            self._cuda = open_cuda(api_major(trt))
            self.binding = "TensorRT %s + %s" % (trt.__version__, self._cuda.package)  # for `runtime info`
            with self._cuda.active():
                self._open(trt, engine_cls, [(rel, blobs.pop(rel)) for rel in record["engines"]])
        except BaseException as e:
            self.close()
            if isinstance(e, Exception) and not isinstance(e, TensorRTError):
                # pycuda.driver.Error, MemoryError, TensorRT's own exceptions: one line, then the fallback
                raise TensorRTError("TensorRT could not open the engine in %s: %s: %s; %s" % (
                    bundle_dir, type(e).__name__, " ".join(str(e).split()), fix))
            raise

    def _open(self, trt, engine_cls, plans):
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        stream = self._cuda.stream_handle()
        for rel, data in plans:
            engine = self._runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise TensorRTError("TensorRT could not load %s (messages above; built with TensorRT %s on %s); %s"
                                    % (rel, self.tensorrt_version, self.gpu, self._fix))
            self._engines.append(engine_cls(trt, engine, stream))
            self._check_io(rel, self._engines[-1])
        self._cuda.sync()  # the profile selections are stream work

        cuda, b, c = self._cuda, self.max_batch, self.num_classes
        self._h_in = cuda.host_empty((b,) + self.sample_shape, np.float32)
        self._d_in = cuda.malloc(self._h_in.nbytes)
        # per group its own width (level heads: contributions to levels g..G); the "if" engine: the level's
        widths = [c] if self.mode == "if" else [self.combiner.width(g) for g in range(1, self.groups + 1)]
        self._h_out = [cuda.host_empty((b, w), np.float32) for w in widths]
        self._d_out = [cuda.malloc(h.nbytes) for h in self._h_out]
        if self.mode == "if":
            self._h_level = cuda.host_empty((1,), np.int32)
            self._d_level = cuda.malloc(self._h_level.nbytes)
        self._level_on_device = None
        self._batch_set = {}
        for i, (rel, e) in enumerate(zip(self.record["engines"], self._engines)):
            for k in range(e.num_profiles):
                e.set_address(k, self.input_name, self._d_in)
                e.set_address(k, self.output_name, self._d_out[i])
                if self.mode == "if":
                    e.set_address(k, self.level_name, self._d_level)
                top = self.profiles[k][2]
                self._set_batch(i, k, top)
                out = e.shape(k, self.output_name)
                if out != (top, c):
                    raise TensorRTError("%s gives %s %s for batch %d, expected %s; %s"
                                        % (rel, self.output_name, out, top, (top, c), self._fix))
        # Run every engine once in every profile now: a plan that loads but cannot execute fails here,
        # inside the constructor, where runtime.load still falls back to ONNX.
        for lo, opt, _ in self.profiles:
            self._run_chunk(np.zeros((opt,) + self.sample_shape, np.float32), self.groups)

    def _check_io(self, rel, e):
        inputs = [n for n in e.names if e.is_input(n)]
        outputs = [n for n in e.names if not e.is_input(n)]
        want = {self.input_name: np.float32}
        if self.mode == "if":
            want[self.level_name] = np.int32
        if sorted(inputs) != sorted(want) or outputs != [self.output_name]:
            raise TensorRTError("%s has inputs %s and outputs %s, expected %s and [%r]; %s"
                                % (rel, inputs, outputs, sorted(want), self.output_name, self._fix))
        for name, dtype in list(want.items()) + [(self.output_name, np.float32)]:
            if e.dtype(name) != np.dtype(dtype):
                raise TensorRTError("%s: %s is %s, expected %s; %s" % (rel, name, e.dtype(name), np.dtype(dtype),
                                                                     self._fix))
        if self.mode == "if" and e.is_shape_input(self.level_name):
            raise TensorRTError("%s treats %r as a shape tensor, which this runtime does not feed; rebuild with: "
                                "%s" % (rel, self.level_name, build_hint(self.bundle_dir, "per-group")))
        if e.batch_ranges(self.input_name) != self.profiles:
            raise TensorRTError("%s has batch profiles %s but %s records %s; %s" % (
                rel, e.batch_ranges(self.input_name), ENGINE_RECORD, self.profiles, self._fix))

    def _profile_for(self, batch):
        return next(k for k, p in enumerate(self.profiles) if p[0] <= batch <= p[2])

    def _set_batch(self, i, k, batch):
        if self._batch_set.get((i, k)) != batch:
            if not self._engines[i].set_input_shape(k, self.input_name, (batch,) + self.sample_shape):
                raise TensorRTError("TensorRT refused batch %d for %s (profile %s); %s"
                                    % (batch, self.record["engines"][i], self.profiles[k], self._fix))
            self._batch_set[(i, k)] = batch

    def _execute(self, i, k):
        try:
            ok = self._engines[i].execute(k, self._cuda.stream_handle())
        except Exception as e:  # TensorRT's own exceptions: one line
            raise TensorRTError("TensorRT failed to run %s: %s: %s" % (self.record["engines"][i], type(e).__name__,
                                                                      " ".join(str(e).split())))
        if not ok:
            raise TensorRTError("TensorRT failed to run %s (messages above)" % self.record["engines"][i])

    def run_level(self, x, level):
        """x: float32 [B, C, H, W], any B (chunks of max_batch). Returns float32 [B, num_classes]."""
        if self._closed:
            raise TensorRTError("this TensorRT backend is closed")
        level = int(level)
        if not 1 <= level <= self.groups:
            raise ValueError("level must be 1..%d, got %d" % (self.groups, level))
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError("input must be [B, %s], got %s" % (", ".join(map(str, self.sample_shape)), x.shape))
        out = np.empty((x.shape[0], self.num_classes), np.float32)
        with self._cuda.active():
            for start in range(0, x.shape[0], self.max_batch):
                chunk = x[start:start + self.max_batch]
                out[start:start + len(chunk)] = self._run_chunk(chunk, level)
        return out

    def _run_chunk(self, x, level):
        b, cuda = x.shape[0], self._cuda
        k = self._profile_for(b)
        self._h_in[:b] = x
        cuda.htod(self._d_in, self._h_in[:b])
        if self.mode == "if":
            if self._level_on_device != level:
                self._level_on_device = None
                self._h_level[0] = level
                cuda.htod(self._d_level, self._h_level)
            self._set_batch(0, k, b)
            self._execute(0, k)
            cuda.dtoh(self._h_out[0][:b], self._d_out[0])
            cuda.sync()
            self._level_on_device = level
            return self._h_out[0][:b].copy()
        for g in range(level):
            self._set_batch(g, k, b)
            self._execute(g, k)
            cuda.dtoh(self._h_out[g][:b], self._d_out[g])
        cuda.sync()
        # the host buffers are reused by the next call: group 1's is copied, combine() allocates the rest
        parts = [(1, self._h_out[0][:b].copy())] + [(g + 1, self._h_out[g][:b]) for g in range(1, level)]
        return self.combiner(parts, level)

    def prepare(self, levels):
        """Run each level once at batch 1 so the first real call pays no start-up cost."""
        probe = np.zeros((1,) + self.sample_shape, np.float32)
        for level in levels:
            self.run_level(probe, level)

    def close(self):
        if self._closed:
            return
        self._closed = True
        cuda = self._cuda
        with (cuda.active() if cuda is not None else contextlib.ExitStack()):
            for e in self._engines:
                e.close()  # contexts and engines go before the memory and the CUDA context they use
            self._engines, self._runtime = [], None
        if cuda is not None:
            self._cuda = None
            cuda.close()
