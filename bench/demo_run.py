"""One phase of `python build.py demo`: frames through a runner (the manager or the fixed model) on a schedule of
budgets and CPU load; the per-inference records and their summaries. The p95 is runtime.profile_schema.p95."""
import time

import numpy as np

from bench.demo_load import LoadGenerator, group_alive
from runtime.profile_schema import p95, point_kwargs

SCHEDULE = {"lo": (0.15, 0.30), "load": (0.40, 0.80)}


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
        apply_point(model, point)

    def set_budget(self, ms):
        pass

    def infer(self, x, arrival):
        return self.model.infer(x)

    def point(self):
        return self._point


def apply_point(model, point):
    """The whole point (placement and precision too: a split or int8 point measured on the default engine
    would anchor the budget on another point's time). The platform is left alone, as the demo's manager
    leaves it on a machine with one cluster and no DVFS."""
    model.set_operating_point(**point_kwargs(point, None, getattr(model, "precisions", None), pin=False))


def measure_p95(model, point, x, seconds=1.0):
    """p95 latency (ms) of one operating point at x's batch size, on the machine as it is now."""
    apply_point(model, point)
    model.infer(x)
    ts, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(ts) < 20:
        t = time.perf_counter()
        model.infer(x)
        ts.append((time.perf_counter() - t) * 1e3)
    return p95(ts)


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
                        p95(lat), 100.0 * np.mean(lat <= rec["budget_ms"][sl]),
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
                     "call_p95_ms": p95(rec["call_ms"][m]) if n else None,
                     "accuracy": float(ok[m].mean()) if n else None,
                     "mean_level": float(lvl[m].mean()) if n else None,
                     "p50_ms": float(np.median(lat[m])) if n else None,
                     "p95_ms": p95(lat[m]) if n else None}
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
                    "p95_ms": p95(lat), "hit_rate": float(np.mean(lat <= rec["budget_ms"][m])),
                    "budget_ms": float(rec["budget_ms"][m][-1]), "level": float(np.mean(rec["level"][m])),
                    "accuracy_so_far": float(rec["correct"][:int(np.nonzero(m)[0][-1]) + 1].mean())})
    return out
