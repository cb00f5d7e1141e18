"""The runtime manager's numbers: its decision cost, and the budget hit rate of the demo's last run.

  decision cost  benchmark_decision (below) on a bundle's profile.json (python build.py profile), timed in this
                 run; without a profile, the cost the demo measured (its demo.json), marked as such
  hit rate       demo.json of `python build.py demo` (default demo-out/): the share of inferences that met the
                 latency budget, for the manager and for the fixed full-width model, under the demo's CPU load
Both come from other parts of the project and may be absent; then the section says so.
"""
import json
import os
import time
import warnings

import numpy as np

from runtime.bundle import read_manifest, read_profile
from runtime.errors import DynnError
from runtime.manager import BudgetWarning, Manager
from runtime.profile_schema import cost

DEMO_CANDIDATES = ("demo-out", os.path.join("docs", "demo"))


class _NullModel(object):
    """Stands in for a Model: the benchmark times the decision alone."""

    class backend(object):
        name = None

    def __init__(self, levels):
        self.levels = levels

    def set_operating_point(self, **kw):
        pass

    def infer(self, x):
        return None


def benchmark_decision(profile, calls=20000, budget_ms=None, out=print):
    """Time Manager.observe (record a call's latency, choose the next point) on this profile's ladder, under
    latencies that make it hold, step down and step up. Prints and returns {"mean_us", "p50_us", "p99_us",
    "max_us", "calls", "ladder", "budget_ms", "switches"}; the timer's own cost is taken off."""
    if not isinstance(profile, dict):
        profile = read_profile(profile)
    levels = sorted(set(p["level"] for p in profile["points"]))
    t = [0.0]
    mgr = Manager(_NullModel(levels), profile, clock=lambda: t[0], power_reader=None)
    front = mgr.ladder[::-1]
    if budget_ms is None:
        budget_ms = cost(front[len(front) // 2], "latency_p95") * 1.2
    # a repeating pattern: calm, a slow stretch (misses), calm again
    pattern = [0.5 * budget_ms] * 300 + [2.0 * budget_ms] * 8 + [0.3 * budget_ms] * 300
    observe, perf, k = mgr.observe, time.perf_counter, len(pattern)
    times, points_run = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        mgr.set_budget(latency_ms=budget_ms)
        for i in range(calls):
            t[0] += 0.002
            a = perf()
            observe(pattern[i % k], 1, t[0])
            times.append(perf() - a)
            points_run.append(mgr.point["id"])
    empty = []
    for _ in range(2000):
        a = perf()
        empty.append(perf() - a)
    base = float(np.median(empty))
    us = np.maximum(0.0, np.asarray(times) - base) * 1e6
    res = {"mean_us": float(us.mean()), "p50_us": float(np.median(us)), "p99_us": float(np.percentile(us, 99)),
           "max_us": float(us.max()), "calls": calls, "ladder": len(mgr.ladder), "budget_ms": budget_ms,
           "switches": int(np.count_nonzero(np.diff(points_run)))}
    if out:
        out("manager decision: mean %.1f us, median %.1f us, p99 %.1f us over %d calls (ladder of %d points, "
            "budget %.3g ms)" % (res["mean_us"], res["p50_us"], res["p99_us"], calls, res["ladder"], budget_ms))
    return res


def decision_cost(bundle_dirs, calls=5000):
    """Time one manager decision on the first of bundle_dirs that holds a profile.json."""
    for d in bundle_dirs:
        if d and os.path.isfile(os.path.join(d, "profile.json")):
            try:
                r = benchmark_decision(read_profile(d, read_manifest(d)), calls=calls, out=None)
            except DynnError as exc:  # an unusable profile is reported, it does not sink the benchmark
                return {"status": "failed", "note": "the decision benchmark on %s: %s" % (d, exc)}
            return dict(r, status="ok", source="this run", profile=os.path.join(d, "profile.json"))
    return {"status": "skipped", "note": "no profile.json in %s (measure one with: python build.py profile BUNDLE)"
                                         % ", ".join(d for d in bundle_dirs if d)}


def demo_result(path=None):
    """The hit rates recorded by the demo's last run, or status 'not run'."""
    cands = [path] if path else list(DEMO_CANDIDATES)
    for c in cands:
        f = os.path.join(c, "demo.json") if os.path.isdir(c) else c
        if not os.path.isfile(f):
            continue
        try:
            with open(f) as fh:
                d = json.load(fh)
            hits = {}
            for name, ph in sorted(d.get("phases", {}).items()):
                for part in ("load_settled", "all"):
                    v = (ph.get(part) or {}).get("hit_rate")
                    if v is not None:
                        hits["%s.%s" % (name, part)] = float(v)
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            return {"status": "unreadable", "file": f, "note": str(exc)}
        crit, settings = d.get("criterion") or {}, d.get("settings") or {}
        return {"status": "ok", "file": f, "hit_rates": hits, "passed": crit.get("passed"),
                "min_hit_rate": crit.get("min_hit_rate"), "budget_ms": settings.get("budget_hi_ms"),
                "quick": settings.get("quick"), "decision": d.get("decision")}
    return {"status": "not run", "note": "no demo.json in %s (python build.py demo)" % ", ".join(cands)}


def manager_section(bundle_dirs, demo_path, calls):
    demo = demo_result(demo_path)
    cost = decision_cost(bundle_dirs, calls)
    if cost["status"] == "skipped" and demo.get("decision"):
        cost = dict(demo["decision"], status="ok", source="the demo's run (%s)" % demo["file"],
                    note=cost["note"])
    return {"decision_cost": cost, "demo": demo}
