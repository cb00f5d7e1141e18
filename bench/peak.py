"""The machine's measured limit: single-precision matrix product throughput on the same cores and threads.

A large square float32 GEMM (torch.mm: MKL/oneDNN on x86, OpenBLAS/Arm libraries on aarch64) is about as close
to the cores' arithmetic peak as software gets; the best of several runs is reported as the peak, in MACs/s.
"""
import time

import torch

from bench.stats import summarize


def measure_peak(threads, n=2048, repeats=5):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g)
        b = torch.randn(n, n, generator=g)
        c = torch.empty(n, n)
        for _ in range(2):
            torch.mm(a, b, out=c)
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(a, b, out=c)
            rates.append(float(n) ** 3 / (time.perf_counter() - t))
    finally:
        torch.set_num_threads(old)
    s = summarize(rates)
    return {"threads": threads, "n": n, "repeats": repeats, "peak_macs_per_s": s["max"],
            "median_macs_per_s": s["median"], "method": "torch.mm float32 %dx%d (torch %s)" % (n, n, torch.__version__)}
