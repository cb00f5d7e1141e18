"""Pure arithmetic of the benchmark: summaries of repeated timings, ratios, the Pareto front.

No I/O and no engines here, so every rule the report relies on is unit-tested on plain numbers.
"""
import math


def percentile(values, q):
    """Linear-interpolated percentile (q in 0..100) of a non-empty list, like numpy's default."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of an empty list")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples):
    """Median and spread of repeated measurements (seconds or any unit): the numbers the report shows."""
    if not samples:
        return None
    med = percentile(samples, 50)
    p10, p90 = percentile(samples, 10), percentile(samples, 90)
    q1, q3 = percentile(samples, 25), percentile(samples, 75)
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


def pareto_front(points):
    """points: [(latency, accuracy, label)]. Returns the points no other point beats: none is at least as fast
    and at least as accurate while strictly better in one of them. Sorted by latency."""
    front = []
    for p in points:
        dominated = any(q[0] <= p[0] and q[1] >= p[1] and (q[0] < p[0] or q[1] > p[1]) for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p[0], -p[1]))


def ideal_latencies(base_latency, macs):
    """Latency each level would have if time were proportional to MACs, anchored at level 1's measurement."""
    if not macs or not macs[0] or base_latency is None:
        return [None] * len(macs)
    return [base_latency * m / macs[0] for m in macs]
