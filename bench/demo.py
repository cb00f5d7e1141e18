"""`python build.py demo`: CIFAR-10 through the runtime manager while the budget and the CPU load change.

  python build.py demo [--target host-cpu | --bundle DIR] [--data DIR] [--duration S] [--quick] [--out DIR]

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
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np

from compile.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIRS = ("data", "/work/data")
DEFAULT_OUT = "demo-out"
SCHEDULE = {"lo": (0.15, 0.30), "load": (0.40, 0.80)}
BUDGET_FACTOR = 1.4  # budgets: this x the profiled p95 latency of a point on the front

# The load generator: N busy processes (this one and N-1 forks), each stops at its own deadline.
LOADGEN = r"""
import os, sys, time
end = time.time() + float(sys.argv[1])
n = int(sys.argv[2])
kids, child = [], False
for _ in range(n - 1):
    pid = os.fork()
    if pid == 0:
        child, kids = True, []
        break
    kids.append(pid)
x = 0
while time.time() < end:
    for _ in range(20000):
        x += 1
if child:
    os._exit(0)
for pid in kids:
    os.waitpid(pid, 0)
"""


class LoadGenerator(object):
    """A separate process group that loads every CPU for `duration_s` and exits by itself.

    It stays in the demo's session on purpose: with the kernel's autogroup scheduling (a group per
    session), a new session would get its own share of the CPUs and hardly slow the demo down, however
    many processes it runs. In the same session it competes like a second application of the same user."""

    def __init__(self, duration_s, workers):
        self.duration_s, self.workers = float(duration_s), int(workers)
        self.proc = None
        self.pgid = None

    def start(self):
        cmd = [sys.executable, "-c", LOADGEN, "%.3f" % self.duration_s, str(self.workers)]
        if sys.version_info >= (3, 11):
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, process_group=0)
        else:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=os.setpgrp)
        self.pgid = self.proc.pid  # its own process group (id = the leader's pid); the forks share it
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Kill what is left of the group (nothing, when it ended by itself) and reap the leader."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---- setup -------------------------------------------------------------------------------------------
def add_arguments(p):
    p.add_argument("--target", default="host-cpu", help="bundle artifacts/<target> (default %(default)s)")
    p.add_argument("--bundle", default=None, metavar="DIR", help="bundle directory (overrides --target)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="CIFAR-10 python batches (default: data/, then /work/data)")
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


def find_data(arg):
    if arg:
        if not os.path.isdir(arg):
            raise UserError("no data directory %s; make CIFAR-10 there with: "
                            "python ../shared/tools/cifar10_from_jpeg.py %s" % (arg, arg))
        return arg
    for d in DATA_DIRS:
        if os.path.isdir(d):
            return d
    raise UserError("no CIFAR-10 data in %s; make it with: python ../shared/tools/cifar10_from_jpeg.py data"
                    % " or ".join(DATA_DIRS))


def load_test_images(data_dir, limit=None):
    from compile.data import load_dataset
    ds = load_dataset(data_dir)
    x, y = ds.test_x.numpy(), ds.test_y.numpy()
    if limit:
        x, y = x[:limit], y[:limit]
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y.astype(np.int64)


def get_profile(bundle, path, log=print):
    from runtime import profile_data as pdata
    from bench.profile_cmd import measure_here, measure_options
    path = path or os.path.join(bundle, pdata.PROFILE_FILE)
    if not os.path.isfile(path):
        log("no profile at %s: measuring a quick one first" % path)
        measure_here(measure_options(bundle, path, quick=True), log=lambda s: log("  " + s))
    return pdata.read_profile(path), path


# ---- one phase ---------------------------------------------------------------------------------------
class ManagerRunner(object):
    name = "manager"

    def __init__(self, mgr):
        self.mgr = mgr

    def set_budget(self, ms):
        self.mgr.set_budget(latency_ms=ms)

    def infer(self, x, arrival):
        return self.mgr.infer(x, arrival)

    def point(self):
        return self.mgr.point


class FixedRunner(object):
    name = "fixed"

    def __init__(self, model, point):
        self.model, self._point = model, point
        kw = {"level": point["level"]}
        if point.get("threads") is not None:
            kw["threads"] = point["threads"]
        model.set_operating_point(**kw)

    def set_budget(self, ms):
        pass

    def infer(self, x, arrival):
        return self.model.infer(x)

    def point(self):
        return self._point


def measure_p95(model, point, x, seconds=1.0):
    """p95 latency (ms) of one operating point at x's batch size, on the machine as it is now."""
    kw = {"level": point["level"]}
    if point.get("threads") is not None:
        kw["threads"] = point["threads"]
    model.set_operating_point(**kw)
    model.infer(x)
    ts, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(ts) < 20:
        t = time.perf_counter()
        model.infer(x)
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(ts, 95))


def budget_at(t, dur, hi, lo):
    a, b = SCHEDULE["lo"]
    return lo if a * dur <= t < b * dur else hi


def run_phase(runner, X, Y, dur, hi, lo, period_s, workers, interval, settle_s, log, batch=1):
    """Run one phase; returns (per-inference arrays, load generator info).

    Frame k arrives at k x period. When the previous inference ends before the next arrival the loop
    sleeps until it; when it ends late, the newest frame that has arrived is taken and older ones are
    dropped. Latency is the response time: from the frame's arrival to its result (waiting included)."""
    n_img = len(X)
    cap = int(dur / max(period_s, 1e-5)) + 10
    rec = {"t": np.zeros(cap), "latency_ms": np.zeros(cap), "call_ms": np.zeros(cap), "budget_ms": np.zeros(cap),
           "level": np.zeros(cap, np.int16), "threads": np.zeros(cap, np.int16), "correct": np.zeros(cap),
           "frame": np.zeros(cap, np.int64)}
    l0, l1 = SCHEDULE["load"][0] * dur, SCHEDULE["load"][1] * dur
    gen = LoadGenerator(l1 - l0, workers)
    info = {"workers": workers, "start_s": None, "end_s": None, "pgid": None}
    budget = None
    i = 0
    last_print, last_i = 0.0, 0
    start = time.perf_counter()
    frame = 0
    try:
        while i < cap:
            now = time.perf_counter()
            if now - start >= dur:
                break
            if info["start_s"] is None and now - start >= l0:
                gen.start()
                info["start_s"], info["pgid"] = now - start, gen.pgid
            elif info["start_s"] is not None and info["end_s"] is None and not gen.running():
                info["end_s"] = now - start
            due = start + frame * period_s
            if due > now:
                time.sleep(due - now)
            else:
                frame = int((now - start) / period_s)  # late: the newest frame, older ones are dropped
                due = start + frame * period_s
            t = due - start
            b = budget_at(t, dur, hi, lo)
            if b != budget:
                runner.set_budget(b)
                if budget is not None:
                    log("  [%s] t=%5.1fs  budget -> %.3f ms" % (runner.name, t, b))
                budget = b
            k = (frame * batch) % (n_img - batch + 1)
            p = runner.point()  # the point this call runs at (a pending switch is applied inside infer)
            t0 = time.perf_counter()
            logits = runner.infer(X[k:k + batch], due)
            t1 = time.perf_counter()
            rec["t"][i], rec["latency_ms"][i], rec["call_ms"][i] = t, (t1 - due) * 1e3, (t1 - t0) * 1e3
            rec["budget_ms"][i], rec["level"][i], rec["threads"][i] = b, p["level"], p.get("threads") or 0
            rec["correct"][i], rec["frame"][i] = np.mean(np.argmax(logits, 1) == Y[k:k + batch]), frame
            i += 1
            frame += 1
            if t1 - start - last_print >= interval:
                sl = slice(last_i, i)
                slots = rec["frame"][i - 1] - (rec["frame"][last_i - 1] if last_i else -1)
                lat = rec["latency_ms"][sl]
                loaded = info["start_s"] is not None and info["end_s"] is None
                log("  [%-7s] t=%5.1fs  budget %.3f ms  load %-3s  level %d (%d thr)  p95 %.3f ms  met %5.1f%%  "
                    "frames done %3.0f%%  acc so far %5.1f%%" % (
                        runner.name, t1 - start, b, "ON" if loaded else "off", p["level"], p.get("threads") or 0,
                        np.percentile(lat, 95), 100.0 * np.mean(lat <= rec["budget_ms"][sl]),
                        100.0 * (i - last_i) / max(1, slots),
                        100.0 * np.mean(rec["correct"][:i])))
                last_print, last_i = t1 - start, i
    finally:
        gen.stop()
    if info["start_s"] is not None and info["end_s"] is None:
        info["end_s"] = time.perf_counter() - start
    info["scheduled"] = [l0, l1]
    info["gone"] = info["pgid"] is None or not group_alive(info["pgid"])
    return dict((k, v[:i]) for k, v in rec.items()), info


def summarize(rec, dur, settle_s, period_s):
    t, lat, bud, ok, lvl = rec["t"], rec["latency_ms"], rec["budget_ms"], rec["correct"], rec["level"]
    hit = lat <= bud
    l0, l1 = SCHEDULE["load"][0] * dur, SCHEDULE["load"][1] * dur
    a, b = SCHEDULE["lo"][0] * dur, SCHEDULE["lo"][1] * dur
    spans = {"load_settled": [(l0 + settle_s, l1)], "load": [(l0, l1)], "before_load": [(0, a), (b, l0)],
             "lo_budget": [(a, b)], "after_load": [(l1, dur)], "all": [(0, dur)]}
    out = {}
    for name, sp in spans.items():
        m = np.zeros(len(t), bool)
        for x0, x1 in sp:
            m |= (t >= x0) & (t < x1)
        n = int(m.sum())
        frames = int(sum(round((x1 - x0) / period_s) for x0, x1 in sp))
        out[name] = {"n": n, "frames": frames, "done": min(1.0, float(n) / frames) if frames else None,
                     "hit_rate": float(hit[m].mean()) if n else None,
                     "call_p95_ms": float(np.percentile(rec["call_ms"][m], 95)) if n else None,
                     "accuracy": float(ok[m].mean()) if n else None,
                     "mean_level": float(lvl[m].mean()) if n else None,
                     "p50_ms": float(np.percentile(lat[m], 50)) if n else None,
                     "p95_ms": float(np.percentile(lat[m], 95)) if n else None}
    return out


def interval_series(rec, step):
    """Per-interval aggregates for the JSON and the plot."""
    t = rec["t"]
    if not len(t):
        return []
    edges = np.arange(0.0, t[-1] + step, step)
    out = []
    for e in edges:
        m = (t >= e) & (t < e + step)
        if not m.any():
            continue
        lat = rec["latency_ms"][m]
        out.append({"t": float(e + step / 2), "n": int(m.sum()), "p50_ms": float(np.median(lat)),
                    "p95_ms": float(np.percentile(lat, 95)), "hit_rate": float(np.mean(lat <= rec["budget_ms"][m])),
                    "budget_ms": float(rec["budget_ms"][m][-1]), "level": float(np.mean(rec["level"][m])),
                    "accuracy_so_far": float(rec["correct"][:int(np.nonzero(m)[0][-1]) + 1].mean())})
    return out


# ---- plot --------------------------------------------------------------------------------------------
def plot_timeline(phases, infos, dur, settle_s, hi, lo, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"manager": "C0", "fixed": "C1"}
    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.4, 1.4, 1.4]})
    ymax = 2.5 * hi
    ax = axes[0]
    for name, rec in phases.items():
        lat = np.minimum(rec["latency_ms"], ymax)
        clipped = rec["latency_ms"] > ymax
        who = "manager" if name == "manager" else "fixed full-width model"
        ax.plot(rec["t"][~clipped], lat[~clipped], ".", ms=2, alpha=0.35, color=colors[name],
                label="%s: response time of each inference" % who)
        ax.plot(rec["t"][clipped], lat[clipped], "^", ms=3, alpha=0.5, color=colors[name])
    tt = np.linspace(0, dur, 2000)
    ax.plot(tt, [budget_at(x, dur, hi, lo) for x in tt], color="k", lw=1.5, label="budget")
    ax.set_ylim(0, ymax * 1.03)
    ax.set_ylabel("response time (ms)\n(^ = clipped)")
    ax.legend(loc="upper left", fontsize=8, markerscale=4)
    for name, rec in phases.items():
        series = interval_series(rec, max(dur / 40.0, 0.25))
        ts = [s["t"] for s in series]
        axes[1].step(ts, [s["level"] for s in series], where="mid", color=colors[name], label=name)
        axes[2].plot(ts, [100 * s["hit_rate"] for s in series], "-o", ms=3, color=colors[name], label=name)
        axes[3].plot(ts, [100 * s["accuracy_so_far"] for s in series], color=colors[name], label=name)
    axes[1].set_ylabel("level\n(mean per interval)")
    axes[2].axhline(95, color="k", ls=":", lw=1)
    axes[2].set_ylabel("budget met (%)\nper interval")
    axes[2].set_ylim(-2, 102)
    axes[3].set_ylabel("accuracy so far (%)")
    axes[3].set_xlabel("time in phase (s)")
    for a in axes:
        l0, l1 = SCHEDULE["load"][0] * dur, SCHEDULE["load"][1] * dur
        a.axvspan(l0, l1, color="red", alpha=0.08)
        a.axvspan(l0, l0 + settle_s, color="red", alpha=0.08, hatch="//", fill=False, lw=0)
        a.grid(alpha=0.3)
    axes[0].text((SCHEDULE["load"][0] + SCHEDULE["load"][1]) / 2 * dur, ymax * 0.97,
                 "CPU load (second process); hatched: settling", ha="center", va="top", fontsize=8, color="darkred")
    axes[1].legend(loc="lower left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---- main --------------------------------------------------------------------------------------------
def _fmt(v, pct=True):
    if v is None:
        return "n/a"
    return "%.1f%%" % (100 * v) if pct else "%.2f" % v


def main(args, log=print):
    from runtime import load
    from runtime import profile_data as pdata
    from runtime.errors import RuntimeUserError
    from runtime.manager import Manager, benchmark_decision

    bundle = args.bundle or os.path.join("artifacts", args.target)
    dur = args.duration or (12.0 if args.quick else 40.0)
    interval = args.interval or (1.0 if args.quick else 2.0)
    workers = args.load_workers or len(os.sched_getaffinity(0))
    batch = int(args.batch)
    if batch < 1:
        raise UserError("--batch must be at least 1, got %d" % batch)
    if dur < 1.0:
        raise UserError("--duration must be at least 1 second")
    data_dir = find_data(args.data)
    X, Y = load_test_images(data_dir, 2000 if args.quick else None)
    try:
        prof, prof_path = get_profile(bundle, args.profile, log)
        model = load(bundle)
    except RuntimeUserError as exc:
        raise UserError(str(exc))
    try:
        X = model.preprocess(X)
        probe = Manager(model, prof)
    except RuntimeUserError as exc:
        model.close()
        raise UserError(str(exc))
    ladder = probe.ladder  # no budget: the p95 latency front, most accurate first
    full_level = max(p["level"] for p in probe.points)
    top = min((p for p in probe.points if p["level"] == full_level), key=lambda p: pdata.cost(p, "latency_p95"))
    mid = ladder[::-1][(len(ladder) - 1) // 2]
    if args.budget_ms:
        try:
            parts = [float(v) for v in args.budget_ms.split(",")]
        except ValueError:
            model.close()
            raise UserError("--budget-ms takes HI or HI,LO in milliseconds, e.g. 1.2,0.6; got %r" % args.budget_ms)
        hi, lo = parts[0], parts[1] if len(parts) > 1 else parts[0]
    elif batch == 1:
        hi = BUDGET_FACTOR * pdata.cost(top, "latency_p95")
        lo = min(hi, BUDGET_FACTOR * pdata.cost(mid, "latency_p95"))
    else:  # the profile is per image at batch 1: measure the two anchor points at this batch instead
        hi = BUDGET_FACTOR * measure_p95(model, top, X[:batch])
        lo = min(hi, BUDGET_FACTOR * measure_p95(model, mid, X[:batch]))
    period_s = (args.period_ms or hi) / 1e3
    l0, l1 = SCHEDULE["load"][0] * dur, SCHEDULE["load"][1] * dur
    settle_s = max(0.5, 0.1 * (l1 - l0))
    log("bundle %s (%s, levels %s), profile %s (%d points, p95 latency front: %s)" % (
        bundle, model.backend.name, model.levels, prof_path, len(prof["points"]),
        ", ".join("%s %.3f ms" % (pdata.label(p), pdata.cost(p, "latency_p95")) for p in ladder[::-1])))
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
            log("phase 2: fixed full-width model at %s (%.0f s)" % (pdata.label(top), dur))
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
        line("fixed %s:" % pdata.label(top), f, "")
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
                        "schedule": SCHEDULE, "settle_s": settle_s, "load_workers": workers, "quick": args.quick},
           "fixed_point": top, "phases": summaries, "load": infos, "criterion": crit, "decision": bench,
           "manager": {"switches": mgr.switches, "warnings": mgr.warnings},
           "intervals": dict((k, interval_series(v, max(dur / 40.0, 0.25))) for k, v in phases.items())}
    with open(os.path.join(args.out, "demo.json"), "w") as fh_:
        json.dump(doc, fh_, indent=1)
    log("wrote %s and %s" % (png, os.path.join(args.out, "demo.json")))
    return 0
