"""Profiles: what a profile.json holds and the arithmetic on it (docs/manager.md). Python 3.6+, numpy.

Written by runtime/profiler.py (`python -m runtime profile BUNDLE` -> BUNDLE/profile.json); read and
validated by runtime.bundle.read_profile / check_profile (the one reader); used by runtime.manager, the
benchmark and `python build.py profile`.

An operating point is (level, processing element, thread count, CPU frequency, GPU frequency); in the
file each point also names the engine binding that ran it and the cluster it was pinned to:

    {"id": 3, "level": 2, "backend": "tflite", "pe": "a15", "cluster": "a15", "threads": 4,
     "cpu_freq_khz": 1800000, "gpu_freq_hz": null, "accuracy": 0.83,
     "latency_ms": {"median": .., "p95": .., "mean": .., "min": .., "max": .., "n": ..},
     "energy_mj": .. | null, "power_w": .. | null}

A placement point (schema version 3, issue 14) runs the level's groups split over PEs: "pe" joins their
names ("a15+a7"), "cluster" and "threads" are null, and it adds
    "placement": {"a15": {"groups": [1, 2], "engine": "tflite", "threads": 4}, "a7": {...}},
    "predicted_ms": .. (what the per-group times predicted), "cpu_freqs_khz": {"a15": .., "a7": ..} | null
Version 2 profiles (no placements) are still read. A point may carry "precision": "fp32" | "int8" (issue 13;
absent means fp32): the signatures it ran, with the accuracy of that precision.

Cost axes: "latency" (latency_ms.median), "latency_p95" (the tail: what a deadline sees), "energy"
(energy_mj per inference), "power" (power_w).
Quality: accuracy, ties broken by level (a higher level is the more accurate one by design); a point
without an accuracy ranks by level alone.
"""
import json

import numpy as np

PROFILE_FILE = "profile.json"
SCHEMA = "dynn-profile"
SCHEMA_VERSION = 3  # 2: the bundle identity ("bundle": target, groups, accuracies, engine sha256) is checked;
READ_VERSIONS = (2, 3)  # 3: placement points
MAPPING_FIELDS = ("backend", "pe", "cluster", "threads", "cpu_freq_khz", "gpu_freq_hz", "placement", "precision")
PRECISIONS = ("fp32", "int8")
COSTS = ("latency", "latency_p95", "energy", "power")

# ---- the one p95 -------------------------------------------------------------------------------------
P95_METHOD = "numpy.percentile(values, 95): linear interpolation between the two closest ranks (numpy's default)"


def p95(values):
    """The 95th percentile every number of the project calls p95 (profile, manager budgets, demo, bench)."""
    return float(np.percentile(np.asarray(values, np.float64), 95))


def latency_stats(seconds):
    """Summary in ms of timed calls (seconds): median, p95 (P95_METHOD), mean, std, min, max, n."""
    ms = np.asarray(seconds, np.float64) * 1e3
    return {"median": float(np.median(ms)), "p95": p95(ms), "mean": float(ms.mean()), "std": float(ms.std()),
            "min": float(ms.min()), "max": float(ms.max()), "n": int(len(ms))}


# ---- which bundle a profile belongs to ---------------------------------------------------------------
def bundle_identity(manifest):
    """What makes a profile this bundle's: target, groups, level accuracies, sha256 of each engine's file.

    TensorRT builds its plan on the device from the listed ONNX file: that file's sha256 stands for it."""
    files = manifest.get("files") or {}
    engines = {}
    for name, eng in sorted((manifest.get("engines") or {}).items()):
        rel = (eng or {}).get("file") or (eng or {}).get("onnx")
        engines[name] = (files.get(rel) or {}).get("sha256") if rel else None
    return {"target": manifest["target"]["name"], "groups": manifest["model"]["groups"],
            "accuracies": [lv.get("test_accuracy") for lv in manifest["levels"]], "engines": engines}


# ---- per-point values --------------------------------------------------------------------------------
def cost(point, axis):
    """The point's cost on one axis (None when not measured)."""
    if axis == "latency":
        return (point.get("latency_ms") or {}).get("median")
    if axis == "latency_p95":
        return (point.get("latency_ms") or {}).get("p95")
    if axis == "energy":
        return point.get("energy_mj")
    if axis == "power":
        return point.get("power_w")
    raise ValueError("unknown cost axis %r; valid: %s" % (axis, ", ".join(COSTS)))


def quality(point):
    """Sort key: accuracy first, then level."""
    acc = point.get("accuracy")
    return (-1.0 if acc is None else float(acc), int(point["level"]))


def mapping(point):
    """Everything but the level: the (backend, pe, cluster, threads, cpu freq, gpu freq, placement) tuple;
    the placement as canonical JSON text, so that the tuple compares and hashes."""
    return tuple(placement_key(point) if k == "placement" else precision(point) if k == "precision" else point.get(k)
                 for k in MAPPING_FIELDS)


def precision(point):
    """A point's precision; profiles from before issue 13 ran float32 only."""
    return point.get("precision") or "fp32"


def point_kwargs(point, prev=None, precisions=None, pin=True):
    """Model.set_operating_point keywords that move a model from point `prev` to `point`: only the fields
    that change; prev None applies the point whole (level, threads, placement, precision, clocks).
    precisions: what the model's engine can switch between (None: one, nothing to switch); pin: whether to touch the platform (cluster
    and CPU clock), False on a machine with one cluster and no DVFS."""
    p, whole = point, prev is None
    kw = {}
    if whole or p["level"] != prev["level"]:
        kw["level"] = p["level"]
    if p.get("threads") is not None and (whole or p.get("threads") != prev.get("threads")):
        kw["threads"] = p["threads"]
    if pin and p.get("cluster") and (whole or p.get("cluster") != prev.get("cluster")
                                     or p.get("cpu_freq_khz") != prev.get("cpu_freq_khz")):
        kw["cluster"] = p["cluster"]
        if p.get("cpu_freq_khz") is not None:
            kw["cpu_freq_khz"] = p["cpu_freq_khz"]
        if p.get("threads") is not None:
            kw["threads"] = p["threads"]  # else Model would use every core of the cluster
    if precisions and len(precisions) > 1 and (whole or precision(p) != precision(prev)) and precision(p) in precisions:
        kw["precision"] = precision(p)
    if p.get("gpu_freq_hz") is not None and (whole or p.get("gpu_freq_hz") != prev.get("gpu_freq_hz")):
        kw["gpu_freq_hz"] = p["gpu_freq_hz"]
    if p.get("placement") if whole else placement_key(p) != placement_key(prev):
        kw["placement"] = p.get("placement")  # issue 14: None runs the level on one PE again
    return kw


def placement_key(point):
    """The point's placement as canonical JSON text (None for one PE)."""
    pl = point.get("placement")
    return None if pl is None else json.dumps(pl, sort_keys=True)


def label(point, level=True):
    """Short human label: 'L2 a15x4 1.8GHz', 'L3 gpu 922MHz', 'L1 allx1'."""
    parts = ["L%d" % point["level"]] if level else []
    pe = point.get("pe") or "?"
    thr = point.get("threads")
    parts.append("%s%s" % (pe, "x%d" % thr if thr and pe != "gpu" else ""))
    if point.get("cpu_freq_khz") and pe != "gpu":
        parts.append("%.1fGHz" % (point["cpu_freq_khz"] / 1e6) if point["cpu_freq_khz"] >= 1e6
                     else "%dMHz" % round(point["cpu_freq_khz"] / 1e3))
    if point.get("gpu_freq_hz"):
        parts.append("%dMHz" % round(point["gpu_freq_hz"] / 1e6))
    if precision(point) != "fp32":
        parts.append(precision(point))
    return " ".join(parts)


# ---- the one Pareto front ----------------------------------------------------------------------------
def pareto_front(items, costs, quality_of):
    """The items no other item beats: THE front of the project (benchmark, profile summary, manager).

    costs(item) -> tuple of costs (lower is better), quality_of(item) -> comparable (higher is better).
    Tie rule: an item is dropped when an item already kept is at least as cheap on every cost and at least
    as good; so of items equal in everything the first in input order stays, and along the result (sorted
    by costs, cheapest first) quality strictly rises for a single cost. Kept items suffice as witnesses:
    whatever dominates an item sorts before it, and is itself kept or dominated by a kept one."""
    order = sorted(items, key=quality_of, reverse=True)  # stable: equal items keep their input order
    order.sort(key=costs)
    kept = []
    for it in order:
        c, q = costs(it), quality_of(it)
        if not any(kq >= q and all(a <= b for a, b in zip(kc, c)) for kc, kq, _ in kept):
            kept.append((c, q, it))
    return [it for _, _, it in kept]


def front(points, axes):
    """Profile points on the front of quality against the cost axes (one or several), cheapest first."""
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    valid = [p for p in points if all(cost(p, a) is not None for a in axes)]
    return pareto_front(valid, lambda p: tuple(cost(p, a) for a in axes), quality)


# ---- ranges and the summary --------------------------------------------------------------------------
def value_range(points, axis):
    """{"min", "max", "ratio", "min_point", "max_point"} of one cost over `points`, or None."""
    vals = [(cost(p, axis), p.get("id")) for p in points if cost(p, axis) is not None]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    return {"min": lo[0], "max": hi[0], "ratio": (hi[0] / lo[0]) if lo[0] > 0 else None,
            "min_point": lo[1], "max_point": hi[1]}


def reference_mapping(points):
    """Where 'the levels alone' are compared: of the mappings every level was measured on (a placement splits
    only the levels it was proposed for), the one on which the most accurate level runs fastest."""
    levels = {}
    for p in points:
        levels.setdefault(mapping(p), set()).add(int(p["level"]))
    every = set(int(p["level"]) for p in points)
    full = set(m for m, lv in levels.items() if lv == every) or set(levels)
    top = max(every)
    cands = [p for p in points if int(p["level"]) == top and cost(p, "latency") is not None and mapping(p) in full]
    if not cands:
        return None
    return mapping(min(cands, key=lambda p: cost(p, "latency")))


def summarize(points):
    """The derived part of a profile: fronts (ids, cheapest first) and dynamic ranges."""
    fronts = dict((a, [p["id"] for p in front(points, a)]) for a in ("latency", "latency_p95", "energy"))
    ref = reference_mapping(points)
    level_pts = [p for p in points if mapping(p) == ref]
    front_pts = dict((a, front(points, a)) for a in ("latency", "energy"))
    dyn = {
        "points": {"latency_ms": value_range(points, "latency"), "energy_mj": value_range(points, "energy")},
        "front": {"latency_ms": value_range(front_pts["latency"], "latency"),
                  "energy_mj": value_range(front_pts["energy"], "energy")},
        "levels": {"mapping": dict(zip(MAPPING_FIELDS, ref)) if ref else None,
                   "latency_ms": value_range(level_pts, "latency"), "energy_mj": value_range(level_pts, "energy")},
    }
    return {"fronts": fronts, "dynamic_range": dyn}
