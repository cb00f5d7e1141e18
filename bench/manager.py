"""The runtime manager's numbers: its decision cost, and the budget hit rate of the demo's last run.

  decision cost  runtime.manager.benchmark_decision on a bundle's profile.json (python build.py profile), timed
                 in this run; without a profile, the cost the demo measured (its demo.json), marked as such
  hit rate       demo.json of `python build.py demo` (default demo-out/): the share of inferences that met the
                 latency budget, for the manager and for the fixed full-width model, under the demo's CPU load
Both come from other parts of the project and may be absent; then the section says so.
"""
import json
import os

DEMO_CANDIDATES = ("demo-out", os.path.join("docs", "demo"))


def decision_cost(bundle_dirs, calls=5000):
    """Time one manager decision on the first of bundle_dirs that holds a profile.json."""
    try:
        from runtime.manager import benchmark_decision
    except ImportError as exc:
        return {"status": "skipped", "note": "runtime.manager.benchmark_decision is not importable (%s)" % exc}
    for d in bundle_dirs:
        if d and os.path.isfile(os.path.join(d, "profile.json")):
            try:
                r = benchmark_decision(d, calls=calls, out=None)
            except Exception as exc:  # noqa: BLE001 - another module's failure must not sink the benchmark
                return {"status": "failed", "note": "benchmark_decision(%s) raised %s: %s"
                                                    % (d, type(exc).__name__, exc)}
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
