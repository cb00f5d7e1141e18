"""The machine's measured limit: single-precision matrix product throughput on the same cores and threads.

Two GEMMs are timed and the faster one is the peak, in MACs/s (best of several runs):
  - torch.mm of two square n x n matrices (MKL/oneDNN on x86, OpenBLAS/Arm libraries on aarch64);
  - XNNPACK's own FULLY_CONNECTED (a [256, n] x [n, n] product in a .tflite run by the engine's interpreter).
On this project's AMD EPYC VM torch.mm reached 46.6 GMAC/s on one thread where XNNPACK's FC reached 117: a
BLAS that is slow on a CPU is not its limit, and the engine's convolutions ran faster than torch.mm's "peak".
"""
import os
import time

import numpy as np
import torch
from torch import nn

from bench.stats import summarize

FC_BATCH = 256


def _rates(fn, macs, repeats):
    for _ in range(2):
        fn()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(macs / (time.perf_counter() - t))
    return summarize(rates)


def _torch_mm(threads, n, repeats):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b, c = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g), torch.empty(n, n)
        return _rates(lambda: torch.mm(a, b, out=c), float(n) ** 3, repeats)
    finally:
        torch.set_num_threads(old)


def fc_file(n, work, log=print):
    """A cached .tflite holding one FULLY_CONNECTED n -> n at batch FC_BATCH (input [B, n, 1, 1])."""
    from bench.refs import convert_cached
    torch.manual_seed(0)
    mod = nn.Sequential(nn.Flatten(), nn.Linear(n, n, bias=False)).eval()
    return convert_cached(os.path.join(work, "refs", "peak"), "fc%d" % n, [("fc", mod)], [FC_BATCH], (n, 1, 1),
                          "GEMM peak model, FULLY_CONNECTED %dx%d" % (n, n), log)


def _xnnpack_fc(path, threads, n, repeats):
    from bench.engines import Signature, open_interpreter
    sig = Signature(open_interpreter(path, threads), "fc_b%d" % FC_BATCH)
    x = np.random.default_rng(0).standard_normal((FC_BATCH, n, 1, 1)).astype(np.float32)
    return _rates(lambda: sig(x), float(FC_BATCH) * n * n, repeats)


def measure_peak(threads, n=2048, repeats=5, fc_path=None):
    """{"peak_macs_per_s", "method", "gemms": {name: summary}} for `threads` threads; fc_path from fc_file()."""
    gemms = {"torch.mm %dx%d (torch %s)" % (n, n, torch.__version__): _torch_mm(threads, n, repeats)}
    if fc_path is not None:
        gemms["XNNPACK FULLY_CONNECTED %dx%dx%d" % (FC_BATCH, n, n)] = _xnnpack_fc(fc_path, threads, n, repeats)
    method = max(gemms, key=lambda k: gemms[k]["max"])
    return {"threads": threads, "n": n, "repeats": repeats, "peak_macs_per_s": gemms[method]["max"],
            "median_macs_per_s": gemms[method]["median"], "method": method,
            "gemms": dict((k, {"max": v["max"], "median": v["median"]}) for k, v in gemms.items())}
