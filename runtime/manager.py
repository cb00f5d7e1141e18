"""Runtime manager: keep a latency / energy / power budget met with the best accuracy available.

    from runtime import load
    from runtime.manager import Manager
    model = load("artifacts/xu3")
    mgr = Manager(model, "artifacts/xu3")          # reads artifacts/xu3/profile.json
    mgr.set_budget(latency_ms=5.0)                  # any time; energy_mj=..., power_w=... too
    logits = mgr.infer(model.preprocess(images))    # runs at the best point that meets the budget

The profile (board_scripts/profile.py) measured every operating point (level, processing element,
threads, CPU and GPU frequency) on an idle board. For a budget the manager keeps the ladder of
points that are Pareto-optimal on accuracy and the budgeted costs (latency: the profiled p95), and
runs the most accurate one predicted to meet it. Predictions are the profile's numbers scaled by what
the manager observes: the ratio of each measured latency to the profiled p95 of the point that ran
(an upper quantile over a window of recent calls), and, where a power reader exists, measured over
profiled power. Hysteresis: it steps down at once when the current point misses (predicted over the
budget, a miss rate above `miss_target`, or three misses in a row), but steps up only after
`up_dwell_s` at a point, one rung at a time, only to a point predicted under `up_margin` x budget, and
never, for a backoff time that doubles on repeated failures, to a point as costly as one that just
failed. A budget that no point meets runs the cheapest point and warns once. Switching goes through
Model.set_operating_point, with only the fields that change.
docs/manager.md has the details; `python -m runtime.manager bench BUNDLE` times one decision.
Python 3.6+, standard library only.
"""
import time
import warnings

from runtime import profile_data as pdata
from runtime.errors import RuntimeUserError

BUDGET_AXES = (("latency_ms", "latency_p95"), ("energy_mj", "energy"), ("power_w", "power"))


class BudgetWarning(RuntimeWarning):
    """A budget that no operating point meets (the manager runs the cheapest one instead)."""


def _models_by_backend(model):
    if isinstance(model, dict):
        models = list(model.values())
    elif isinstance(model, (list, tuple)):
        models = list(model)
    else:
        models = [model]
    if not models:
        raise RuntimeUserError("Manager needs a model")
    out = {}
    for m in models:
        out[getattr(getattr(m, "backend", None), "name", None)] = m
    return out, models[0]


class Manager(object):
    """Chooses and applies operating points for `model` (a Model, or {backend name: Model} when the
    profile spans engines, e.g. TensorRT on the GPU and TFLite on the CPU clusters)."""

    def __init__(self, model, profile, window=16, quantile=0.9, margin=0.9, up_margin=0.85, up_dwell_s=0.5,
                 miss_target=0.03, miss_alpha=0.02, backoff_s=1.0, max_backoff_s=8.0, power_reader="auto",
                 power_period_s=0.5, clock=time.perf_counter):
        if not isinstance(profile, dict):
            profile = pdata.read_profile(profile)
        pdata.check_profile(profile)
        self.profile = profile
        self._models, self._primary = _models_by_backend(model)
        self._share_platform()
        self._clock = clock
        self.window, self.quantile, self.margin, self.up_margin = int(window), quantile, margin, up_margin
        self.up_dwell_s, self.miss_target, self.miss_alpha = up_dwell_s, miss_target, miss_alpha
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.power_period_s = power_period_s
        self._power_reader_arg = power_reader
        self._power_reader = None

        self.points = self._usable_points(profile)
        P = self.points
        self._med = [pdata.cost(p, "latency") for p in P]
        self._p95 = [(p["latency_ms"].get("p95") or pdata.cost(p, "latency")) for p in P]
        self._energy = [pdata.cost(p, "energy") for p in P]
        self._power = [pdata.cost(p, "power") for p in P]
        self._quality = [pdata.quality(p) for p in P]
        self._model_of = [self._models.get(p.get("backend"), self._models.get(None)) for p in P]

        plat = profile.get("platform") or {}
        clusters = plat.get("clusters") or {}
        self._dvfs = bool(plat.get("dvfs_available"))
        self._pin = len(clusters) > 1 or self._dvfs  # one cluster, no DVFS (a PC): never touch the platform
        settings = profile.get("settings") or {}
        self._park = {}
        if settings.get("park_other_clusters") and self._dvfs:
            for name, c in clusters.items():
                if c.get("frequencies_khz"):
                    self._park[name] = min(c["frequencies_khz"])

        self._ring = [1.0] * self.window   # measured / profiled p95: the tail ratio (latency budgets)
        self._ring_m = [1.0] * self.window  # measured / profiled median: the mean ratio (energy budgets)
        self._ring_pos = 0
        self._nobs = 0
        self._pw = 1.0  # measured / profiled power
        self._next_power = 0.0
        self.budget = {"latency_ms": None, "energy_mj": None, "power_w": None}
        self._applied = None
        self._pending = None
        self.calls = 0
        self.switches = 0
        self.last_latency_ms = None
        self.last_switch_ms = 0.0
        self.warnings = []
        self._set_ladder(())
        self._t_switch = 0.0
        self._switch(self._ladder[0], self._clock())  # no budget: the most accurate point, fastest mapping

    # ---- setup ---------------------------------------------------------------------------------------
    def _share_platform(self):
        """Several engines in one process must share one Platform (it holds the clock lock)."""
        if len(self._models) > 1 and hasattr(self._primary, "platform"):
            for m in self._models.values():
                if m is not self._primary and hasattr(m, "_platform"):
                    m._platform = self._primary.platform

    def _usable_points(self, profile):
        names = set(self._models)
        pts = []
        for p in profile["points"]:
            if pdata.cost(p, "latency") is None:
                continue
            if None not in names and p.get("backend") not in names:
                continue
            m = self._models.get(p.get("backend"), self._models.get(None))
            if hasattr(m, "levels") and p["level"] not in m.levels:
                continue
            pts.append(p)
        if not pts:
            have = sorted(set(str(p.get("backend")) for p in profile["points"]))
            raise RuntimeUserError("the profile has no operating point this model can run (profiled engines: %s; "
                                   "model engines: %s); profile the bundle again with the engine in use"
                                   % (", ".join(have), ", ".join(str(n) for n in sorted(names, key=str))))
        return pts

    # ---- budget --------------------------------------------------------------------------------------
    def set_budget(self, latency_ms=None, energy_mj=None, power_w=None):
        """Per call (per inference at batch 1): latency in ms, energy in mJ, mean power in W. None = no limit.

        Takes effect at the next infer(). Raises RuntimeUserError for a budget the profile cannot judge
        (energy or power on a board without sensors)."""
        new = {"latency_ms": latency_ms, "energy_mj": energy_mj, "power_w": power_w}
        axes = []
        for key, axis in BUDGET_AXES:
            v = new[key]
            if v is None:
                continue
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise RuntimeUserError("budget %s=%r is not a number" % (key, v))
            if not v > 0:
                raise RuntimeUserError("budget %s must be positive, got %r" % (key, v))
            if all(pdata.cost(p, axis) is None for p in self.points):
                reason = (self.profile.get("energy") or {}).get("reason") or "no power sensors"
                raise RuntimeUserError("the profile has no %s measurements (%s); set a latency budget instead"
                                       % (axis, reason))
            new[key] = v
            axes.append(axis)
        self.budget = new
        self._set_ladder(tuple(axes))
        now = self._clock()
        j = self._best(self.margin, now)
        if j is None:
            j = self._cheapest
            if axes:
                self._warn("no operating point meets %s in the profile (cheapest: %s, %s); running the cheapest"
                           % (self.budget_text(), pdata.label(self.points[j]), self._point_cost_text(j)))
        if j != self._cur:
            self._switch(j, now)

    def budget_text(self):
        parts = []
        for key, unit in (("latency_ms", "ms"), ("energy_mj", "mJ"), ("power_w", "W")):
            if self.budget[key] is not None:
                parts.append("%s %.4g %s" % (key.split("_")[0], self.budget[key], unit))
        return ", ".join(parts) or "no budget"

    def _point_cost_text(self, j):
        out = ["%.3g ms p95" % self._p95[j]]
        if self._energy[j] is not None:
            out.append("%.3g mJ" % self._energy[j])
        if self._power[j] is not None:
            out.append("%.3g W" % self._power[j])
        return ", ".join(out)

    def _set_ladder(self, axes):
        self._axes = axes
        self._primary_axis = axes[0] if axes else "latency_p95"
        P = self.points
        pts = pdata.pareto_set(P, axes) if len(axes) > 1 else pdata.pareto_front(P, axes[0] if axes else "latency_p95")
        idx = dict((id(p), i) for i, p in enumerate(P))
        ladder = [idx[id(p)] for p in pts]
        self._costp = [pdata.cost(p, self._primary_axis) for p in P]
        inf = float("inf")
        ladder.sort(key=lambda i: (tuple(-q for q in self._quality[i]),
                                   self._costp[i] if self._costp[i] is not None else inf))
        self._ladder = ladder  # most accurate first
        self._cheapest = min(ladder, key=lambda i: (self._costp[i], self._p95[i]))
        self._lat_b, self._en_b, self._pow_b = (self.budget["latency_ms"], self.budget["energy_mj"],
                                                self.budget["power_w"])
        self._any_budget = bool(axes)
        self._ceiling, self._ceiling_until = None, 0.0
        self._backoff, self._last_fail = self.backoff_s, -1e18
        self._miss_ewma, self._consec = 0.0, 0
        self._warned = False
        self._next_up = 0.0
        if ("power" in axes or "energy" in axes) and self._power_reader is None:
            self._power_reader = self._make_power_reader()

    def _make_power_reader(self):
        arg = self._power_reader_arg
        if callable(arg):
            return arg
        if arg != "auto" or not (self.profile.get("energy") or {}).get("available"):
            return None
        try:
            meter = self._primary.platform.power
        except Exception:  # noqa: BLE001 - a fake model or no platform: no feedback on power
            return None
        return meter.read_total_w if meter else None

    # ---- prediction ----------------------------------------------------------------------------------
    def _scales(self):
        """(tail, mean) slowdown: an upper quantile of recent measured/profiled-p95 latency ratios, and
        (only with an energy budget) the median of measured/profiled-median ratios; None before enough data."""
        n = self._nobs
        if n < self.window // 2:
            return None, None
        srt = sorted(self._ring[:n] if n < self.window else self._ring)
        tail = srt[int(self.quantile * (len(srt) - 1))]
        if self._en_b is None:
            return tail, None
        srt = sorted(self._ring_m[:n] if n < self.window else self._ring_m)
        return tail, srt[len(srt) // 2]

    def _feasible(self, j, m, tail, mid, n, up=False):
        """Is point j predicted under m x budget? Latency: the slowdown seen at the current point scales j's
        profiled p95 (multiplicative), except for a step up, which adds the excess seen at the current point
        instead (additive): a fixed overhead (waking up, cold caches) is not a slowdown, and a step up that
        turns out too optimistic is caught by the miss check and barred by the backoff."""
        if self._lat_b is not None:
            s = tail if tail is not None else 1.0
            if up:
                lat = (self._p95[j] + (s - 1.0) * self._p95[self._cur]) * n
            else:
                lat = s * self._p95[j] * n
            if lat > m * self._lat_b:
                return False
        if self._en_b is not None:
            en = self._energy[j] * n * self._pw * (mid if mid is not None else 1.0)
            if en > m * self._en_b:
                return False
        if self._pow_b is not None and self._power[j] * self._pw > m * self._pow_b:
            return False
        return True

    def _best(self, m, now, n=1, cheaper_than=None, better_than=None, tail=None, mid=None, fresh=True):
        """Most accurate ladder point predicted to meet m x budget (None if none)."""
        if fresh:
            tail, mid = self._scales()
        ceiling = self._ceiling if now < self._ceiling_until else None
        costp, quality = self._costp, self._quality
        for j in self._ladder:
            if better_than is not None and quality[j] <= better_than:
                return None
            c = costp[j]
            if cheaper_than is not None and c >= cheaper_than:
                continue
            if ceiling is not None and c >= ceiling:
                continue
            if self._feasible(j, m, tail, mid, n):
                return j
        return None

    # ---- the decision --------------------------------------------------------------------------------
    def _step(self, ms, n, now):
        """Record one measured call (ms for n inputs) at the current point; choose the next point."""
        cur = self._cur
        self._ring[self._ring_pos] = ms / (n * self._p95[cur])
        self._ring_m[self._ring_pos] = ms / (n * self._med[cur])
        self._ring_pos = (self._ring_pos + 1) % self.window
        if self._nobs < self.window:
            self._nobs += 1
        self._n_at_cur += 1
        if not self._any_budget:
            return cur
        if self._lat_b is not None:
            miss = ms > self._lat_b
            self._miss_ewma += self.miss_alpha * ((1.0 if miss else 0.0) - self._miss_ewma)
            self._consec = self._consec + 1 if miss else 0
        if self._power_reader is not None and now >= self._next_power:
            self._read_power(now, cur)
        tail, mid = self._scales()
        if (self._consec >= 3 or self._miss_ewma > self.miss_target
                or not self._feasible(cur, 1.0, tail, mid, n)):
            return self._step_down(cur, now, n, tail, mid)
        if (now >= self._next_up and now - self._t_switch >= self.up_dwell_s and self._n_at_cur >= self.window
                and self._miss_ewma <= 0.5 * self.miss_target):
            self._next_up = now + 0.05  # look up at most 20 times a second
            j = self._rung_up(cur)
            if (j is not None and (now >= self._ceiling_until or self._costp[j] < self._ceiling)
                    and self._feasible(j, self.up_margin, tail, mid, n, up=True)):
                self._switch(j, now)
                return j
        return cur

    def _rung_up(self, cur):
        """The next more accurate point on the ladder (one rung at a time: a probe that fails costs little)."""
        q = self._quality[cur]
        for j in reversed(self._ladder):
            if self._quality[j] > q:
                return j
        return None

    def _step_down(self, cur, now, n, tail, mid):
        j = self._best(self.margin, now, n, cheaper_than=self._costp[cur], tail=tail, mid=mid, fresh=False)
        if j is None:
            j = self._cheapest
        if j == cur:
            self._warn("%s is missed even at the cheapest operating point (%s) under the current load; "
                       "staying there" % (self.budget_text(), pdata.label(self.points[cur])), stacklevel=5)
            self._miss_ewma, self._consec = 0.0, 0
            return cur
        # a failure: keep points as costly as this one out of reach for a while (longer if it keeps happening)
        self._backoff = (min(self._backoff * 2, self.max_backoff_s) if now - self._last_fail < 4 * self._backoff
                         else self.backoff_s)
        self._last_fail = now
        self._ceiling, self._ceiling_until = self._costp[cur], now + self._backoff
        self._switch(j, now)
        return j

    def _switch(self, j, now):
        self._cur = j
        self._pending = j
        self._t_switch = now
        self._n_at_cur = 0
        self._miss_ewma, self._consec = 0.0, 0

    def _read_power(self, now, cur):
        self._next_power = now + self.power_period_s
        if self._power[cur] is None:
            return
        try:
            w = self._power_reader()
        except Exception as exc:  # noqa: BLE001 - a sensor read failing must not stop inference
            self._power_reader = None
            self._warn("power feedback off: reading the sensors failed (%s)" % exc, once=False, stacklevel=5)
            return
        if w:
            self._pw += 0.5 * (w / self._power[cur] - self._pw)

    def _warn(self, msg, once=True, stacklevel=3):
        if once:
            if self._warned:
                return
            self._warned = True
        self.warnings.append(msg)
        warnings.warn(msg, BudgetWarning, stacklevel=stacklevel)  # points at the caller of set_budget/infer

    # ---- applying and running ------------------------------------------------------------------------
    def _apply(self, j):
        p, prev = self.points[j], (self.points[self._applied] if self._applied is not None else None)
        model = self._model_of[j]
        new_model = prev is None or self._model_of[self._applied] is not model
        kw = {}
        if new_model or p["level"] != prev["level"]:
            kw["level"] = p["level"]
        if p.get("threads") is not None and (new_model or p.get("threads") != prev.get("threads")):
            kw["threads"] = p["threads"]
        changed_cluster = prev is None or p.get("cluster") != prev.get("cluster")
        if self._pin and p.get("cluster") and (changed_cluster or p.get("cpu_freq_khz") != prev.get("cpu_freq_khz")):
            kw["cluster"] = p["cluster"]
            if p.get("cpu_freq_khz") is not None:
                kw["cpu_freq_khz"] = p["cpu_freq_khz"]
            if "threads" not in kw and p.get("threads") is not None:
                kw["threads"] = p["threads"]  # else Model would use every core of the cluster
        if p.get("gpu_freq_hz") is not None and (prev is None or p.get("gpu_freq_hz") != prev.get("gpu_freq_hz")):
            kw["gpu_freq_hz"] = p["gpu_freq_hz"]
        if kw:
            model.set_operating_point(**kw)
        if self._park and changed_cluster and p.get("cluster"):
            plat = self._primary.platform
            for name, khz in self._park.items():
                if name != p["cluster"] and (prev is None or prev.get("cluster") == name):
                    plat.set_cpu_freq(name, khz)  # the cluster just left idles at its lowest clock
        self._applied = j
        self._pending = None
        if prev is not None:
            self.switches += 1

    def infer(self, x, arrival=None):
        """Model.infer at the chosen operating point (x: float32 [N, C, H, W] from model.preprocess).

        The budget is per call; the profile is per image at batch 1, so a batch of N is predicted N times.
        arrival: when the request arrived (the manager's clock, default time.perf_counter), e.g. a camera
        frame's timestamp; the latency held against the budget is then the response time, waiting included."""
        clock = self._clock
        t0 = clock()
        if self._pending is not None:
            self._apply(self._pending)
        t1 = clock()
        out = self._model_of[self._cur].infer(x)
        t2 = clock()
        self.calls += 1
        self.last_switch_ms = (t1 - t0) * 1e3
        self.last_latency_ms = ms = (t2 - (t1 if arrival is None else arrival)) * 1e3
        self._step(ms, len(x), t2)
        return out

    # ---- state ---------------------------------------------------------------------------------------
    @property
    def point(self):
        """The operating point the next infer() runs at (a dict from the profile)."""
        return self.points[self._cur]

    @property
    def level(self):
        return self.points[self._cur]["level"]

    @property
    def ladder(self):
        """The points the current budget chooses from, most accurate first."""
        return [self.points[j] for j in self._ladder]

    def status(self):
        """A dict for logs: point, budget, observed slowdown, predicted latency, miss rate, counters."""
        tail, mid = self._scales()
        j = self._cur
        return {"point": pdata.label(self.points[j]), "point_id": self.points[j].get("id"),
                "level": self.points[j]["level"], "threads": self.points[j].get("threads"),
                "budget": dict(self.budget), "slowdown": tail,
                "predicted_ms": (tail if tail is not None else 1.0) * self._p95[j],
                "miss_rate": self._miss_ewma, "power_ratio": self._pw, "calls": self.calls,
                "switches": self.switches, "ladder": len(self._ladder)}

    def __repr__(self):
        return "<Manager %s, %d points (%d on the ladder), at %s>" % (
            self.budget_text(), len(self.points), len(self._ladder), pdata.label(self.point))


# ---- decision benchmark ------------------------------------------------------------------------------
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
    """Time Manager's per-call decision (record the latency, choose the next point) on this profile's
    ladder, under latencies that make it hold, step down and step up. Prints and returns
    {"mean_us", "p50_us", "p99_us", "max_us", "calls", "ladder"}."""
    if not isinstance(profile, dict):
        profile = pdata.read_profile(profile)
    levels = sorted(set(p["level"] for p in profile["points"]))
    t = [0.0]
    mgr = Manager(_NullModel(levels), profile, clock=lambda: t[0], power_reader=None)
    front = mgr.ladder[::-1]
    if budget_ms is None:
        budget_ms = pdata.cost(front[len(front) // 2], "latency_p95") * 1.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        mgr.set_budget(latency_ms=budget_ms)
        res = _time_steps(mgr, t, budget_ms, calls)
    res["budget_ms"] = budget_ms
    if out:
        out("manager decision: mean %.1f us, median %.1f us, p99 %.1f us over %d calls (ladder of %d points, "
            "budget %.3g ms)" % (res["mean_us"], res["p50_us"], res["p99_us"], calls, res["ladder"], budget_ms))
    return res


def _time_steps(mgr, t, budget_ms, calls):
    # a repeating pattern: calm, a slow stretch (misses), calm again
    pattern = [0.5 * budget_ms] * 300 + [2.0 * budget_ms] * 8 + [0.3 * budget_ms] * 300
    step, perf = mgr._step, time.perf_counter
    times = []
    k = len(pattern)
    for i in range(calls):
        t[0] += 0.002
        a = perf()
        step(pattern[i % k], 1, t[0])
        times.append(perf() - a)
    # the timer's own cost, measured the same way, comes off
    empty = []
    for _ in range(2000):
        a = perf()
        empty.append(perf() - a)
    base = sorted(empty)[len(empty) // 2]
    us = sorted(max(0.0, x - base) * 1e6 for x in times)
    res = {"mean_us": sum(us) / len(us), "p50_us": us[len(us) // 2], "p99_us": us[int(0.99 * (len(us) - 1))],
           "max_us": us[-1], "calls": calls, "ladder": len(mgr.ladder)}
    return res


def main(argv=None):
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m runtime.manager",
                                description="Runtime manager tools (the manager itself is a library).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    b = sub.add_parser("bench", help="time one manager decision on a profile's ladder")
    b.add_argument("profile", help="bundle directory holding profile.json, or a profile.json")
    b.add_argument("--calls", type=int, default=20000)
    b.add_argument("--budget-ms", type=float, default=None)
    args = p.parse_args(argv)
    if args.command != "bench":
        p.print_help()
        return 2
    try:
        benchmark_decision(args.profile, args.calls, args.budget_ms)
    except RuntimeUserError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
