"""The runtime manager's numbers: its decision cost, and the budget hit rate of the demo's last run.

Both come from other parts of the project and may not exist yet; then the section says so.
  decision cost  runtime.manager.benchmark_decision_cost(model) -> {"median_s": ..., ...} (or seconds)
  hit rate       demo.json written by `python build.py demo` (its output directory)
"""
import inspect
import json
import os

DEMO_CANDIDATES = (os.path.join("bench-out", "demo"), os.path.join("artifacts", "demo"), os.path.join("runs", "demo"),
                   os.path.join("docs", "demo"))
HOOK = "benchmark_decision_cost"


def decision_cost(model):
    try:
        import runtime.manager as mgr
    except ImportError as exc:
        return {"status": "skipped", "note": "runtime.manager is not importable (%s)" % exc}
    fn = getattr(mgr, HOOK, None)
    if fn is None:
        return {"status": "skipped", "note": "runtime.manager has no %s(); nothing to measure" % HOOK}
    try:
        params = inspect.signature(fn).parameters
        r = fn(model) if params else fn()
    except Exception as exc:  # noqa: BLE001 - another module's failure must not sink the benchmark
        return {"status": "failed", "note": "%s() raised %s: %s" % (HOOK, type(exc).__name__, exc)}
    if isinstance(r, (int, float)):
        r = {"median_s": float(r)}
    return dict(r, status="ok") if isinstance(r, dict) else {"status": "failed", "note": "unexpected %r" % (r,)}


def _find_hit_rate(d, prefix=""):
    """(key, value) pairs anywhere in demo.json whose key names a hit rate."""
    found = []
    if isinstance(d, dict):
        for k, v in d.items():
            key = prefix + k
            if isinstance(v, (int, float)) and "hit" in k.lower():
                found.append((key, float(v)))
            elif isinstance(v, dict):
                found += _find_hit_rate(v, key + ".")
    return found


def demo_result(path=None):
    cands = [path] if path else list(DEMO_CANDIDATES)
    for c in cands:
        f = os.path.join(c, "demo.json") if os.path.isdir(c) else c
        if f and os.path.isfile(f):
            try:
                with open(f) as fh:
                    d = json.load(fh)
            except (OSError, ValueError) as exc:
                return {"status": "unreadable", "file": f, "note": str(exc)}
            hits = _find_hit_rate(d)
            return {"status": "ok", "file": f, "hit_rates": dict(hits), "created": d.get("created"),
                    "summary": d.get("summary") if isinstance(d.get("summary"), dict) else None}
    return {"status": "not run", "note": "no demo.json in %s (python build.py demo)" % ", ".join(c for c in cands if c)}
