"""Run in a fresh process by bench/memory.py: load one set of engine files, run each signature once,
print the resident-memory growth as one JSON line.

    python -m bench.memory_worker '{"kind": "engine", "bundle": DIR, "batches": [1, 32], "threads": 1}'
    python -m bench.memory_worker '{"kind": "files", "files": [{"path": F, "signatures": [...]}], ...}'

Everything importable is imported before the first reading, so the difference is what loading and running
the model costs, not Python modules. No torch here.
"""
import gc
import json
import os
import resource
import sys


def rss_bytes():
    """(bytes, method): current resident set size from /proc, else the peak from getrusage."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024, "VmRSS"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


def main(argv):
    spec = json.loads(argv[1])
    import numpy as np
    import runtime
    from runtime.backends.tflite_backend import TFLiteBackend, interpreter_class  # noqa: F401
    # what runtime.load and Model import lazily (the board layer, placement, workers), so the engine's
    # growth is its engine, not modules the bare-interpreter side never pays for
    import runtime.bundle, runtime.placement, runtime.platform, runtime.platform.sysfs, runtime.workers  # noqa: E401,F401
    cls, binding = interpreter_class()
    threads = int(spec.get("threads", 1))
    shape = tuple(spec["input_shape"])
    inputs = {b: np.zeros((b,) + shape, np.float32) for b in spec.get("batches", [1])}
    gc.collect()
    before, method = rss_bytes()
    keep = []
    runs = 0
    if spec["kind"] == "engine":
        m = runtime.load(spec["bundle"], backend="tflite", threads=threads)
        keep.append(m)
        for b, x in sorted(inputs.items()):
            for k in m.levels:
                m.infer(x, k)
                runs += 1
    else:
        for f in spec["files"]:
            it = cls(model_path=f["path"], num_threads=threads)
            keep.append(it)
            io = it.get_signature_list()
            for sig in f["signatures"]:
                r = it.get_signature_runner(sig)
                name = io[sig]["inputs"][0]
                x = inputs[int(sig.rsplit("_b", 1)[1])]
                r(**{name: x.astype(r.get_input_details()[name]["dtype"])})  # an int8 file takes int8 input
                runs += 1
    gc.collect()
    after, _ = rss_bytes()
    print(json.dumps({"before": before, "after": after, "delta": after - before, "method": method,
                      "runs": runs, "binding": binding, "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
