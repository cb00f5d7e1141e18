"""Profiles: the on-board measurements of a bundle's operating points (docs/manager.md).

Written by board_scripts/profile.py (BUNDLE/profile.json), read by runtime.manager.Manager.
Python 3.6+, standard library only.

An operating point is (level, processing element, thread count, CPU frequency, GPU frequency); in the
file each point also names the engine binding that ran it and the cluster it was pinned to:

    {"id": 3, "level": 2, "backend": "tflite", "pe": "a15", "cluster": "a15", "threads": 4,
     "cpu_freq_khz": 1800000, "gpu_freq_hz": null, "accuracy": 0.83,
     "latency_ms": {"median": .., "p95": .., "mean": .., "min": .., "max": .., "n": ..},
     "energy_mj": .. | null, "power_w": .. | null}

Cost axes: "latency" (latency_ms.median), "latency_p95" (the tail: what a deadline sees), "energy"
(energy_mj per inference), "power" (power_w).
Quality: accuracy, ties broken by level (a higher level is the more accurate one by design); a point
without an accuracy ranks by level alone.
"""
import json
import os

from runtime.errors import RuntimeUserError

PROFILE_FILE = "profile.json"
SCHEMA = "dynn-profile"
SCHEMA_VERSION = 1
MAPPING_FIELDS = ("backend", "pe", "cluster", "threads", "cpu_freq_khz", "gpu_freq_hz")
COSTS = ("latency", "latency_p95", "energy", "power")


def read_profile(path):
    """A profile dict from a profile.json file or a bundle directory holding one."""
    if os.path.isdir(path):
        path = os.path.join(path, PROFILE_FILE)
    if not os.path.isfile(path):
        raise RuntimeUserError("no profile at %s; measure one on the board with: python3 board_scripts/profile.py "
                               "BUNDLE (on the host: python build.py profile BUNDLE)" % path)
    try:
        with open(path) as f:
            prof = json.load(f)
    except ValueError as exc:
        raise RuntimeUserError("%s is not valid JSON (%s); measure the profile again" % (path, exc))
    check_profile(prof, path)
    return prof


def check_profile(prof, where="profile"):
    if not isinstance(prof, dict) or prof.get("schema") != SCHEMA:
        raise RuntimeUserError("%s is not a dynn profile (schema %r)" % (where, getattr(prof, "get", dict)("schema")))
    if int(prof.get("schema_version", 0)) > SCHEMA_VERSION:
        raise RuntimeUserError("%s has profile schema version %s but this runtime reads up to %d; update the runtime"
                               % (where, prof.get("schema_version"), SCHEMA_VERSION))
    if not prof.get("points"):
        raise RuntimeUserError("%s holds no operating points; measure the profile again" % where)


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
    """Everything but the level: the (backend, pe, cluster, threads, cpu freq, gpu freq) tuple."""
    return tuple(point.get(k) for k in MAPPING_FIELDS)


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
    return " ".join(parts)


# ---- fronts and ranges -------------------------------------------------------------------------------
def pareto_front(points, axis):
    """Points that no other point beats on both quality and `axis` cost (ties: the cheaper one).

    Returned cheapest first; along the list cost rises and quality strictly rises."""
    valid = [p for p in points if cost(p, axis) is not None]
    valid.sort(key=lambda p: (cost(p, axis), tuple(-q for q in quality(p))))
    front, best = [], None
    for p in valid:
        q = quality(p)
        if best is None or q > best:
            front.append(p)
            best = q
    return front


def pareto_set(points, axes):
    """Points not dominated on quality and all `axes` together (for budgets on several axes)."""
    pts = [p for p in points if all(cost(p, a) is not None for a in axes)]

    def dominates(a, b):
        ca, cb = [cost(a, x) for x in axes], [cost(b, x) for x in axes]
        qa, qb = quality(a), quality(b)
        ge = qa >= qb and all(x <= y for x, y in zip(ca, cb))
        return ge and (qa > qb or any(x < y for x, y in zip(ca, cb)))

    return [p for p in pts if not any(dominates(o, p) for o in pts if o is not p)]


def value_range(points, axis):
    """{"min", "max", "ratio", "min_point", "max_point"} of one cost over `points`, or None."""
    vals = [(cost(p, axis), p.get("id")) for p in points if cost(p, axis) is not None]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    return {"min": lo[0], "max": hi[0], "ratio": (hi[0] / lo[0]) if lo[0] > 0 else None,
            "min_point": lo[1], "max_point": hi[1]}


def reference_mapping(points):
    """The mapping on which the most accurate level runs fastest: where 'the levels alone' are compared."""
    top = max(int(p["level"]) for p in points)
    cands = [p for p in points if int(p["level"]) == top and cost(p, "latency") is not None]
    if not cands:
        return None
    return mapping(min(cands, key=lambda p: cost(p, "latency")))


def summarize(points):
    """The derived part of a profile: fronts (ids, cheapest first) and dynamic ranges."""
    fronts = dict((a, [p["id"] for p in pareto_front(points, a)]) for a in ("latency", "latency_p95", "energy"))
    ref = reference_mapping(points)
    level_pts = [p for p in points if mapping(p) == ref]
    front_pts = dict((a, pareto_front(points, a)) for a in ("latency", "energy"))
    dyn = {
        "points": {"latency_ms": value_range(points, "latency"), "energy_mj": value_range(points, "energy")},
        "front": {"latency_ms": value_range(front_pts["latency"], "latency"),
                  "energy_mj": value_range(front_pts["energy"], "energy")},
        "levels": {"mapping": dict(zip(MAPPING_FIELDS, ref)) if ref else None,
                   "latency_ms": value_range(level_pts, "latency"), "energy_mj": value_range(level_pts, "energy")},
    }
    return {"fronts": fronts, "dynamic_range": dyn}
