"""The profiler's placements (issue 14): which splits of a level over PEs are worth measuring.

Measuring every placement is out of reach (4 groups on 2 PEs: 14 splits per level, more with clusters and
engines), so: each group's latency is timed alone on each candidate PE (batch 1, inside the PE's worker, the
hand-off subtracted), a greedy longest-first assignment (groups by falling time, each to the PE that would
finish it first; the longest one on each PE of the set in turn) proposes splits per set of PEs, and the
`count` best predicted per level become profile points that the sweep measures like any other
(runtime/profiler.py). A point records the placement in the
dict form runtime.placement.parse reads back, the predicted latency, and the clock of each cluster it ran at.
"""
import itertools
import time

import numpy as np

from runtime.placement import GROUP_ENGINES


def candidate_pes(plat):
    """PE names a placement may use here: the board's clusters when it has several, else the one cluster's
    online CPUs in two halves (cpu:0 and cpu:1 on a 2-core PC; cpu:0-1 and cpu:2-3 on a Nano)."""
    if len(plat.clusters) > 1:
        return list(plat.clusters)
    cpus = sorted(plat.cluster_cpus(list(plat.clusters)[0]))
    if len(cpus) < 2:
        return []
    half = len(cpus) // 2
    return ["cpu:" + ",".join(str(c) for c in part) for part in (cpus[:half], cpus[half:])]


def _median_s(fn, runs):
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def group_times(model, pes, x, runs):
    """({pe: [ms of group 1, ..., G] alone on that PE}, hand-off ms) through the model's own PE workers."""
    top = model.levels[-1]
    model.set_operating_point(level=top, placement={pes[0]: list(range(1, top + 1))})
    handoff = _median_s(model._placement.ping, runs) * 1e3
    out = {}
    for pe in pes:
        model.set_operating_point(level=top, placement={pe: list(range(1, top + 1))})
        plan = model._placement
        out[pe] = [max(_median_s(lambda g=g: plan.time_groups(x, (g,)), runs) * 1e3 - handoff, 1e-3)
                   for g in range(1, top + 1)]
    model.set_operating_point(placement=None)
    return out, handoff


def propose(level, times, handoff_ms, count):
    """The `count` placements of `level` with the lowest predicted latency: [(predicted ms, placement)].

    For every set of two or more PEs and every PE of it taking the longest group first, the other groups
    longest-first (mean time over the set) each go to the PE where load + its time there is least; a split
    leaving a PE empty belongs to a smaller set and is skipped."""
    pes, found = sorted(times), {}
    for k in range(2, len(pes) + 1):
        for subset in itertools.combinations(pes, k):
            order = sorted(range(1, level + 1), key=lambda g: -np.mean([times[p][g - 1] for p in subset]))
            for first in subset:
                load, assign = dict.fromkeys(subset, 0.0), dict((p, []) for p in subset)
                for i, g in enumerate(order):
                    p = first if i == 0 else min(subset, key=lambda q: (load[q] + times[q][g - 1], q))
                    load[p] += times[p][g - 1]
                    assign[p].append(g)
                if all(assign.values()):
                    placement = dict((p, sorted(v)) for p, v in assign.items())
                    key = tuple(sorted((p, tuple(v)) for p, v in placement.items()))
                    found.setdefault(key, (max(load.values()) + handoff_ms, placement))
    return sorted(found.values(), key=lambda pp: pp[0])[:count]


def placement_points(model, plat, levels, count, x, runs, pin, log):
    """Profile points (not yet measured) for the proposed placements of each level of `model`."""
    pes = candidate_pes(plat)
    if count <= 0 or len(pes) < 2 or model.backend.name not in GROUP_ENGINES:
        if count > 0:
            log("  placements: none (%s)" % ("this board offers one PE" if len(pes) < 2 else
                                             "the %s engine runs levels, not groups" % model.backend.name))
        return []
    freqs = None
    if pin and plat.dvfs_available:  # a split runs every cluster it uses at full clock
        freqs = dict((n, max(c.frequencies_khz)) for n, c in plat.clusters.items()
                     if n in pes and c.available and c.frequencies_khz)
        for n, khz in freqs.items():
            plat.set_cpu_freq(n, khz)
    times, handoff = group_times(model, pes, x, runs)
    log("  per-group ms alone on each PE: %s; hand-off %.3f ms" % (
        "; ".join("%s %s" % (p, " ".join("%.3f" % t for t in ts)) for p, ts in sorted(times.items())), handoff))
    out = []
    for k in levels:
        for predicted, placement in propose(k, times, handoff, count):
            model.set_operating_point(level=k, placement=placement)
            out.append({"level": k, "backend": model.backend.name, "pe": "+".join(sorted(placement)),
                        "cluster": None, "threads": None, "cpu_freq_khz": None, "gpu_freq_hz": None,
                        "placement": model.placement, "predicted_ms": predicted, "cpu_freqs_khz": freqs})
    model.set_operating_point(placement=None)
    return out
