"""`python build.py demo`: CIFAR-10 through the runtime manager while the budget and the CPU load change.

  python build.py demo --data DIR [--target host-cpu | --bundle DIR] [--duration S] [--quick] [--out DIR]

Frames (--batch CIFAR-10 test images each, default 32) arrive every --period-ms, like a camera; a frame
that cannot be started before the next one arrives is dropped. Batches keep the budget well above the
scheduler's time slices (a few ms), which a lone sub-millisecond inference cannot ride out under load. Latency is the response time, from a frame's arrival
to its result. Each phase lasts --duration seconds and follows the same schedule (fractions of it):
  0.00-0.15  budget HI (1.4 x the p95 latency of the full-width model at this batch, measured at the start
             on the idle machine: it fits while the CPU is idle)
  0.15-0.30  budget LO (1.4 x the p95 of a middle point of the latency front: the manager must drop levels)
  0.30-1.00  budget HI again; 0.40-0.80: a second process busy-loops on every core (--load-workers
             processes, default one per CPU), then stops by itself
Phase 1 runs the manager (runtime.manager.Manager); phase 2 runs the fixed full-width model (the top
level on its fastest mapping in the profile) through the same schedule and load. Printed: a live line
per --interval, then the share of inferences within the budget during the load after a settling window,
and accuracy, manager vs fixed. Written to --out (default demo-out/): demo.json and timeline.png.
The profile is BUNDLE/profile.json; without one a quick profile is measured first. docs/manager.md.
"""
import os
import time
import warnings

import numpy as np

from bench.demo_plot import plot_timeline
from bench.demo_run import (SCHEDULE, FixedRunner, ManagerRunner, interval_series, measure_p95, run_phase,
                            summarize)
from compile.errors import UserError
from runtime import profile_schema as ps

DEFAULT_OUT = "demo-out"
BUDGET_FACTOR = 1.4  # budgets: this x the profiled p95 latency of a point on the front


# ---- setup -------------------------------------------------------------------------------------------
def add_arguments(p):
    p.add_argument("--target", default="host-cpu", help="bundle artifacts/<target> (default %(default)s)")
    p.add_argument("--bundle", default=None, metavar="DIR", help="bundle directory (overrides --target)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the data set's directory, as for `python build.py train --data DIR` (its test split is "
                        "used: CIFAR-10 python batches or an image folder)")
    p.add_argument("--duration", type=float, default=None, help="seconds per phase (default 40, quick 12)")
    p.add_argument("--quick", action="store_true", help="short phases, fewer images")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="output directory (default %(default)s)")
    p.add_argument("--budget-ms", default=None, metavar="HI[,LO]", help="latency budgets (default: from the profile)")
    p.add_argument("--period-ms", type=float, default=None, help="frame interval (default: the HI budget)")
    p.add_argument("--load-workers", type=int, default=None, help="busy processes (default one per CPU)")
    p.add_argument("--batch", type=int, default=32, metavar="N", help="images per frame (default %(default)s)")
    p.add_argument("--interval", type=float, default=None, help="seconds between live lines (default 2, quick 1)")
    p.add_argument("--no-fixed", action="store_true", help="skip the fixed full-width comparison phase")
    p.add_argument("--profile", default=None, metavar="FILE", help="profile (default BUNDLE/profile.json)")
    p.add_argument("--no-placements", action="store_true",
                   help="leave the profile's placements (groups split over PEs) out of the manager's choice: run "
                        "once with and once without to see what they add under load")


def check_data(path):
    if not os.path.isdir(path):
        raise UserError("--data %s is not a directory; pass the data set the model was trained on, the same DIR as "
                        "in `python build.py train --data DIR`" % path)
    return path


def parse_budgets(spec):
    """--budget-ms HI[,LO] -> (hi, lo) in ms, or None when not given."""
    if not spec:
        return None
    try:
        parts = [float(v) for v in spec.split(",")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 2 or not all(0 < v < float("inf") for v in parts):
        raise UserError("--budget-ms takes HI or HI,LO in milliseconds, e.g. 1.2,0.6; got %r" % spec)
    return parts[0], parts[-1]


def load_test_images(data_dir, limit=None):
    from compile.data import load_dataset
    ds = load_dataset(data_dir)
    x, y = ds.test_x.numpy(), ds.test_y.numpy()
    if limit:
        x, y = x[:limit], y[:limit]
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y.astype(np.int64)


def get_profile(bundle, path, log=print):
    from bench.profile_cmd import measure_here
    from runtime.bundle import read_manifest, read_profile
    path = path or os.path.join(bundle, ps.PROFILE_FILE)
    if not os.path.isfile(path):
        log("no profile at %s: measuring a quick one first" % path)
        measure_here(bundle, path, log=lambda s: log("  " + s), quick=True)
    return read_profile(path, read_manifest(bundle)), path


# ---- main --------------------------------------------------------------------------------------------
def _fmt(v, pct=True):
    if v is None:
        return "n/a"
    return "%.1f%%" % (100 * v) if pct else "%.2f" % v


def main(args, log=print):
    from bench.manager import benchmark_decision
    from runtime import load
    from runtime.cli import cpu_count
    from runtime.bundle import atomic_write_json
    from runtime.manager import Manager

    bundle = args.bundle or os.path.join("artifacts", args.target)
    dur = args.duration or (12.0 if args.quick else 40.0)
    interval = args.interval or (1.0 if args.quick else 2.0)
    workers = args.load_workers or cpu_count()
    batch = int(args.batch)
    if batch < 1:
        raise UserError("--batch must be at least 1, got %d" % batch)
    if dur < 1.0:
        raise UserError("--duration must be at least 1 second")
    if workers < 1:
        raise UserError("--load-workers must be at least 1, got %d" % workers)
    budgets = parse_budgets(args.budget_ms)
    data_dir = check_data(args.data)
    X, Y = load_test_images(data_dir, 2000 if args.quick else None)
    prof, prof_path = get_profile(bundle, args.profile, log)
    if args.no_placements:
        prof = dict(prof, points=[p for p in prof["points"] if not p.get("placement")])
        log("placements left out of the profile (--no-placements): %d points remain" % len(prof["points"]))
    model = load(bundle)
    try:
        X = model.preprocess(X)
        probe = Manager(model, prof)
    except BaseException:
        model.close()
        raise
    ladder = probe.ladder  # no budget: the p95 latency front, most accurate first
    full_level = max(p["level"] for p in probe.points)
    top = min((p for p in probe.points if p["level"] == full_level), key=lambda p: ps.cost(p, "latency_p95"))
    mid = ladder[::-1][(len(ladder) - 1) // 2]
    if budgets:
        hi, lo = budgets
    elif batch == 1:
        hi = BUDGET_FACTOR * ps.cost(top, "latency_p95")
        lo = min(hi, BUDGET_FACTOR * ps.cost(mid, "latency_p95"))
    else:  # the profile is per image at batch 1: measure the two anchor points at this batch instead
        hi = BUDGET_FACTOR * measure_p95(model, top, X[:batch])
        lo = min(hi, BUDGET_FACTOR * measure_p95(model, mid, X[:batch]))
    period_s = (args.period_ms or hi) / 1e3
    l0, l1 = SCHEDULE["load"][0] * dur, SCHEDULE["load"][1] * dur
    settle_s = max(0.5, 0.1 * (l1 - l0))
    log("bundle %s (%s, levels %s), profile %s (%d points, p95 latency front: %s)" % (
        bundle, model.backend.name, model.levels, prof_path, len(prof["points"]),
        ", ".join("%s %.3f ms" % (ps.label(p), ps.cost(p, "latency_p95")) for p in ladder[::-1])))
    log("data %s: %d test images, %d per frame; frames every %.3f ms; budget HI %.3f ms, LO %.3f ms (%.0f-%.0f%% of the phase); "
        "load %d busy processes from %.1f s to %.1f s; settling %.1f s" % (
            data_dir, len(X), batch, period_s * 1e3, hi, lo, 100 * SCHEDULE["lo"][0], 100 * SCHEDULE["lo"][1], workers,
            l0, l1, settle_s))
    phases, infos, summaries = {}, {}, {}
    mgr = None
    shown = warnings.showwarning
    warnings.showwarning = lambda msg, *a, **k: log("  [manager] warning: %s" % msg)
    try:
        log("phase 1: the manager (%.0f s)" % dur)
        mgr = Manager(model, prof)
        phases["manager"], infos["manager"] = run_phase(ManagerRunner(mgr), X, Y, dur, hi, lo, period_s, workers,
                                                        interval, settle_s, log, batch)
        if not args.no_fixed:
            time.sleep(0.5)
            log("phase 2: fixed full-width model at %s (%.0f s)" % (ps.label(top), dur))
            phases["fixed"], infos["fixed"] = run_phase(FixedRunner(model, top), X, Y, dur, hi, lo, period_s,
                                                        workers, interval, settle_s, log, batch)
    finally:
        warnings.showwarning = shown
        model.close()
    for name, rec in phases.items():
        summaries[name] = summarize(rec, dur, settle_s, period_s)
    bench = benchmark_decision(prof, calls=5000 if args.quick else 20000, out=None)

    # ---- report
    m = summaries["manager"]
    log("== during the load, after %.1f s settling (%.1f-%.1f s), budget %.3f ms (response time: arrival to "
        "result) ==" % (settle_s, l0 + settle_s, l1, hi))
    def line(name, ph, what):
        a, w = ph["all"], ph["load_settled"]
        log("%-22s met the budget on %s of %d inferences (%s of the frames; the rest dropped), accuracy %s, "
            "mean level %s | whole run: met %s, accuracy %s%s" % (
                name, _fmt(w["hit_rate"]), w["n"], _fmt(w["done"]), _fmt(w["accuracy"]), _fmt(w["mean_level"], False),
                _fmt(a["hit_rate"]), _fmt(a["accuracy"]), what))

    line("manager:", m, ", %d switches" % mgr.switches)
    crit = {"min_hit_rate": 0.95, "manager_hit_rate": m["load_settled"]["hit_rate"]}
    if "fixed" in summaries:
        f = summaries["fixed"]
        line("fixed %s:" % ps.label(top), f, "")
        crit["fixed_hit_rate"] = f["load_settled"]["hit_rate"]
        if m["all"]["accuracy"] is not None and f["all"]["accuracy"] is not None:
            log("accuracy, manager vs fixed: %+.1f points over the whole run, %+.1f during the load" % (
                100 * (m["all"]["accuracy"] - f["all"]["accuracy"]),
                100 * ((m["load_settled"]["accuracy"] or 0) - (f["load_settled"]["accuracy"] or 0))))
    mh, fh = crit["manager_hit_rate"], crit.get("fixed_hit_rate")
    crit["passed"] = bool(mh is not None and mh >= 0.95 and (fh is None or fh < 0.95))
    log("criterion (manager >= 95%% during the load%s): %s" % (
        ", the fixed model below" if fh is not None else "", "PASS" if crit["passed"] else "FAIL"))
    log("manager decision: mean %.1f us, p99 %.1f us per call (ladder of %d points)" % (
        bench["mean_us"], bench["p99_us"], bench["ladder"]))
    gone = all(i["gone"] for i in infos.values())
    log("load generator: %s" % ("stopped by itself, no process left" if gone else "WARNING: processes left"))

    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "timeline.png")
    title = ("%s: manager vs fixed full-width model; budget %.3f ms (LO %.3f ms), frames every %.3f ms, "
             "CPU load %.0f-%.0f s" % (bundle, hi, lo, period_s * 1e3, l0, l1))
    plot_timeline(phases, infos, dur, settle_s, hi, lo, png, title)
    doc = {"bundle": os.path.abspath(bundle), "profile": os.path.abspath(prof_path), "data": data_dir,
           "backend": model.backend.name, "images": len(X),
           "settings": {"duration_s": dur, "batch": batch, "period_ms": period_s * 1e3, "budget_hi_ms": hi, "budget_lo_ms": lo,
                        "schedule": SCHEDULE, "settle_s": settle_s, "load_workers": workers, "quick": args.quick,
                        "placements": not args.no_placements},
           "fixed_point": top, "phases": summaries, "load": infos, "criterion": crit, "decision": bench,
           "manager": {"switches": mgr.switches, "warnings": mgr.warnings},
           "intervals": dict((k, interval_series(v, max(dur / 40.0, 0.25))) for k, v in phases.items())}
    atomic_write_json(os.path.join(args.out, "demo.json"), doc)
    log("wrote %s and %s" % (png, os.path.join(args.out, "demo.json")))
    return 0
