"""One worker thread per processing element (PE), each with its own engine, kept alive between calls.

A worker pins itself with os.sched_setaffinity(0, cpus) from inside its own thread (on Linux 0 is the
calling thread) before it opens its engine, so the engine's own thread pool (XNNPACK's, ONNX Runtime's
intra-op threads), created by that thread, inherits the same CPUs. Engines per PE:
  tflite    one interpreter of its own (TFLiteBackend gives each calling thread one) at the PE's threads
  onnx      an InferenceSession of its own at the PE's threads, run as level j for its groups 1..j
  tensorrt  a TensorRTBackend (CUDA context and execution contexts) of its own, run the same way
The threads an engine started while its worker opened it are remembered: set_operating_point(cluster=...)
pins every thread of the process, so afterwards each worker re-pins itself and those at its next job.
Both bindings release the GIL while they compute, so the PEs run at the same time. Hand-off is a pair of
plain locks per worker (the cheapest wake-up CPython has: a futex each way; queue.Queue adds a Condition).
Placed runs of one Model are serialised by one lock: a placement already keeps its PEs busy.
"""
import os
import threading

import numpy as np

from runtime.backends.base import Combiner
from runtime.bundle import level_weights
from runtime.errors import PlatformError, RuntimeUserError
from runtime.placement import GROUP_ENGINES, divisor
from runtime.platform.mapping import _threads


class _Worker(object):
    def __init__(self, pe, opener, epoch):
        self.pe, self._opener, self._epoch_of = pe, opener, epoch
        self._epoch, self._engine_tids = epoch(), ()
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._job = self._result = self._error = None
        self._closer = None
        self.thread = threading.Thread(target=self._loop, name="dynn-pe-%s" % pe.name)
        self.thread.daemon = True  # a blocked engine call must not keep the process alive at exit
        self.thread.start()
        self._done.acquire()  # until the engine is open (or failed to open)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _loop(self):
        try:
            self._pin((0,))
            before = set(_threads())
            run, self._closer = self._opener(self.pe)
            self._engine_tids = tuple(set(_threads()) - before)  # the engine's own pool, started just now
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that asked for this PE
            self._error = exc
            self._done.release()
            return
        self._done.release()
        while True:
            self._go.acquire()
            job = self._job
            if job is None:
                break
            try:
                if self._epoch != self._epoch_of():  # cluster= pinned every thread since: take ours back
                    self._pin((0,) + self._engine_tids)
                    self._epoch = self._epoch_of()
                self._result = run(*job)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread by wait()
                self._error = exc
            self._done.release()
        try:
            if self._closer is not None:
                self._closer()
        finally:
            self._done.release()

    def _pin(self, tids):
        if not self.pe.cpus:
            return
        try:
            for tid in tids:
                os.sched_setaffinity(tid, self.pe.cpus)
        except ProcessLookupError:
            pass  # an engine thread that has exited
        except (OSError, AttributeError) as exc:
            raise PlatformError("cannot pin PE %s to CPUs %s: %s (CPUs this process may use: %s)"
                                % (self.pe.name, sorted(self.pe.cpus), getattr(exc, "strerror", exc),
                                   sorted(os.sched_getaffinity(0))))

    def submit(self, x, groups):
        self._job = (x, groups)
        self._go.release()

    def wait(self):
        self._done.acquire()
        result, error, self._result, self._error = self._result, self._error, None, None
        if error is not None:
            raise error
        return result

    def close(self, timeout=5.0):
        if self.thread.is_alive():
            self._job = None
            self._go.release()
            self._done.acquire(timeout=timeout)
            self.thread.join(timeout)


class Plan(object):
    """A checked placement of one level bound to its workers: run(x) gives the level's logits."""

    def __init__(self, pool, level, parts, workers):
        self.level, self.parts = level, parts
        self._pool, self._jobs = pool, list(zip(workers, (p.groups for p in parts)))
        self._combine = pool.combiner
        tflite = any(p.pe.engine == "tflite" for p in parts)
        self.batch_sizes = pool.tflite().batch_sizes if tflite else None

    def run(self, x, level=None):
        results = self._dispatch(x, self._jobs)
        results.sort(key=lambda r: r[0])  # group order: the sum is the sequential one, bit for bit
        return self._combine(results, self.level)

    def time_groups(self, x, groups):
        """Run only `groups` on every PE of the plan, no combining (the profiler times groups alone)."""
        self._dispatch(x, [(w, groups) for w, _ in self._jobs])

    def ping(self):
        """One hand-off to every PE and back with no work (what a placed call costs beyond its engines)."""
        self._dispatch(None, [(w, ()) for w, _ in self._jobs])

    def _dispatch(self, x, jobs):
        with self._pool.lock:
            self._pool.check_open()
            for w, groups in jobs:
                w.submit(x, groups)
            results, error = [], None
            for w, _ in jobs:
                try:
                    results.extend(w.wait())
                except BaseException as exc:  # noqa: BLE001 - every worker is collected before raising
                    error = error or exc
        if error is not None:
            raise error
        return results

    def warm(self):
        """Pack weights and allocate buffers at every batch size the plan will see (first use only)."""
        shape = tuple(self._pool.manifest["input"]["shape"][1:])
        for b in self.batch_sizes or (1,):
            self.run(np.zeros((b,) + shape, np.float32))


class Pool(object):
    """A Model's PE workers, by PE: a placement used again (or another sharing its PEs) reuses them."""

    def __init__(self, model):
        self.model, self.manifest = model, model.manifest
        self.weights = level_weights(model.manifest)
        self.combiner = Combiner.from_manifest(model.manifest)
        self.scale = [float(s) for s in model.manifest["model"]["level_scale"]]
        self.lock, self._plan_lock = threading.Lock(), threading.Lock()  # runs; opening workers
        self.epoch = 0  # Model.set_operating_point(cluster=...) counts up: workers then re-pin themselves
        self._workers, self._plans, self._tflite, self._closed = {}, {}, None, False

    def check_open(self):
        if self._closed:
            raise RuntimeUserError("this model of %s is closed; load the bundle again to run it"
                                   % self.model.bundle_dir)

    def tflite(self):
        """The TFLite backend PEs share (each worker thread gets its own interpreter from it)."""
        if self.model.backend.name == "tflite":
            return self.model.backend
        if self._tflite is None:
            from runtime.backends.tflite_backend import TFLiteBackend
            self._tflite = TFLiteBackend(self.model.bundle_dir, self.manifest)
        return self._tflite

    def plan(self, level, parts):
        """The Plan of a parsed placement, opening and warming the workers it needs on first use."""
        key = (level, parts)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        with self._plan_lock:  # two threads asking for a new PE at once open one worker, not two
            plan = self._plans.get(key)
            if plan is not None:
                return plan
            self.check_open()
            workers = []
            for p in parts:
                w = self._workers.get(p.pe)
                if w is None:
                    w = self._workers[p.pe] = _Worker(p.pe, self._opener(p.pe), lambda: self.epoch)
                workers.append(w)
            plan = Plan(self, level, parts, workers)
            plan.warm()
            self._plans[key] = plan
        return plan

    def _opener(self, pe):
        """The function a worker calls in its own thread: -> (run(x, groups) -> [(group, logits)], close)."""
        if pe.engine in GROUP_ENGINES:
            backend, threads = self.tflite(), pe.threads

            def open_group_engine(pe):
                backend.contributions(None, (), threads)  # opens this thread's interpreter (and its pool) now
                return (lambda x, groups: backend.contributions(x, groups, threads)), None
            return open_group_engine
        divs = [1.0 if self.combiner.heads else divisor(j, self.weights, self.scale)  # heads: a whole level
                for j in range(1, len(self.scale) + 1)]

        def open_level_engine(pe):
            model = self.model
            if pe.engine == "onnx":
                from runtime.backends.onnx_backend import OnnxBackend
                be = OnnxBackend(model.bundle_dir, self.manifest, pe.threads)
            else:
                from runtime.trt.backend import TensorRTBackend
                be = TensorRTBackend(model.bundle_dir, self.manifest)

            def run(x, groups):
                if not groups:
                    return []
                out = be.run_level(x, len(groups))
                if divs[len(groups) - 1] != 1.0:
                    out /= np.float32(divs[len(groups) - 1])
                return [(1, out)]
            return run, be.close
        return open_level_engine

    def close(self):
        with self.lock:
            self._closed = True
            for w in self._workers.values():
                w.close()
            self._workers, self._plans = {}, {}
            if self._tflite is not None:
                self._tflite.close()
