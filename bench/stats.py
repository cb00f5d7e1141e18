"""Pure arithmetic of the benchmark: summaries of repeated timings, ratios, the Pareto front.

No I/O and no engines here, so every rule the report relies on is unit-tested on plain numbers. Percentiles
are numpy.percentile's (linear interpolation, as runtime.profile_schema.P95_METHOD); the front is the project's
one (runtime.profile_schema.pareto_front).
"""
import numpy as np

from runtime.profile_schema import pareto_front


def summarize(samples):
    """Median and spread of repeated measurements (seconds or any unit): the numbers the report shows."""
    if not samples:
        return None
    p10, q1, med, q3, p90 = (float(v) for v in np.percentile(np.asarray(samples, np.float64), [10, 25, 50, 75, 90]))
    return {"median": med, "p10": p10, "p90": p90, "iqr": q3 - q1, "min": min(samples), "max": max(samples),
            "n": len(samples), "spread": (p90 - p10) / med if med else None}


def ratio(a, b):
    """a / b, or None when either is missing or b is zero (the report prints a dash)."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def median_of(summary):
    return None if summary is None else summary["median"]


def paired_ratios(a_samples, b_samples):
    """Summary of a[i] / b[i] over interleaved rounds: a and b were timed side by side in each round, so the
    per-round ratio cancels slow drifts of the machine (another job, frequency changes)."""
    rs = [a / b for a, b in zip(a_samples, b_samples) if b]
    return summarize(rs)


def latency_front(points):
    """points: [(latency, accuracy, label, ...)] -> the Pareto front of accuracy against latency, fastest first
    (the project's one front and tie rule: of points equal in both, the first stays)."""
    return pareto_front(points, lambda p: (p[0],), lambda p: p[1])


def ideal_latencies(base_latency, macs):
    """Latency each level would have if time were proportional to MACs, anchored at level 1's measurement."""
    if not macs or not macs[0] or base_latency is None:
        return [None] * len(macs)
    return [base_latency * m / macs[0] for m in macs]
