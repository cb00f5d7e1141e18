"""Runtime manager: keep a latency / energy / power budget met with the best accuracy available.

    from runtime import load
    from runtime.manager import Manager
    model = load("artifacts/xu3")
    mgr = Manager(model, "artifacts/xu3")          # reads artifacts/xu3/profile.json
    mgr.set_budget(latency_ms=5.0)                  # any time; energy_mj=..., power_w=... too
    logits = mgr.infer(model.preprocess(images))    # runs at the best point that meets the budget

The profile (`python -m runtime profile BUNDLE`) measured every operating point (level, processing element,
threads, CPU and GPU frequency) on an idle board. This package: the Manager below (budgets, applying points
through Model.set_operating_point with only the fields that change, state), policy.py (the ladder and the
choice after each call), predictor.py (the profile scaled by what is observed) and hysteresis.py (when to
step down, when a step up may be tried, the backoff). docs/manager.md has the details; the decision
benchmark is bench/manager.py. Python 3.6+, standard library and numpy.
"""
import time
import warnings

from runtime import profile_schema as ps
from runtime.bundle import check_profile, read_profile
from runtime.errors import RuntimeUserError
from runtime.manager.hysteresis import Hysteresis
from runtime.manager.policy import CHEAPEST_MISSES, SWITCH, Policy
from runtime.manager.predictor import Predictor

BUDGET_AXES = (("latency_ms", "latency_p95", "ms"), ("energy_mj", "energy", "mJ"), ("power_w", "power", "W"))


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
        self._models, self._primary = _models_by_backend(model)
        manifest = getattr(self._primary, "manifest", None)  # a real Model: refuse another bundle's profile
        if isinstance(profile, dict):
            profile = check_profile(profile, "the profile", manifest)
        else:
            profile = read_profile(profile, manifest)
        self.profile = profile
        self._share_platform()
        self._clock = clock
        self.power_period_s = power_period_s
        self._power_reader_arg = power_reader
        self._power_reader = None

        self.points = P = self._usable_points(profile)
        self._p95 = [ps.cost(p, "latency_p95") for p in P]
        self._energy = [ps.cost(p, "energy") for p in P]
        self._power = [ps.cost(p, "power") for p in P]
        self._model_of = [self._models.get(p.get("backend"), self._models.get(None)) for p in P]
        self._pred = Predictor(self._p95, [ps.cost(p, "latency") for p in P], self._energy, self._power,
                               window, quantile)
        self._hyst = Hysteresis(window, up_dwell_s, miss_target, miss_alpha, backoff_s, max_backoff_s)
        self._policy = Policy(P, self._pred, self._hyst, margin, up_margin)

        plat = profile.get("platform") or {}
        clusters = plat.get("clusters") or {}
        dvfs = bool(plat.get("dvfs_available"))
        self._pin = len(clusters) > 1 or dvfs  # one cluster, no DVFS (a PC): never touch the platform
        self._park = {}
        if (profile.get("settings") or {}).get("park_other_clusters") and dvfs:
            for name, c in clusters.items():
                if c.get("frequencies_khz"):
                    self._park[name] = min(c["frequencies_khz"])

        self.budget = {"latency_ms": None, "energy_mj": None, "power_w": None}
        self._applied = None
        self._pending = None
        self.calls = 0
        self.switches = 0
        self.last_latency_ms = None
        self.last_switch_ms = 0.0
        self.warnings = []
        self._warned = False
        self._next_power = 0.0
        self._switch(self._policy.ladder[0], self._clock())  # no budget: the most accurate point, fastest mapping

    # ---- setup ---------------------------------------------------------------------------------------
    def _share_platform(self):
        """Several engines in one process must share one Platform (it holds the clock lock)."""
        if len(self._models) > 1 and hasattr(self._primary, "platform"):
            for m in self._models.values():
                if m is not self._primary and hasattr(m, "use_platform"):
                    m.use_platform(self._primary.platform)

    def _usable_points(self, profile):
        names = set(self._models)
        pts = []
        for p in profile["points"]:
            if None not in names and p.get("backend") not in names:
                continue
            m = self._models.get(p.get("backend"), self._models.get(None))
            if hasattr(m, "levels") and p["level"] not in m.levels:
                continue
            pts.append(p)
        if not pts:
            have = sorted(set(str(p.get("backend")) for p in profile["points"]))
            raise RuntimeUserError("the profile has no operating point this model can run (profiled engines: %s; "
                                   "model engines: %s); profile the bundle again with the engine in use: "
                                   "python -m runtime profile BUNDLE --backends NAME"
                                   % (", ".join(have), ", ".join(str(n) for n in sorted(names, key=str))))
        return pts

    # ---- budget --------------------------------------------------------------------------------------
    def set_budget(self, latency_ms=None, energy_mj=None, power_w=None):
        """Per call (per inference at batch 1): latency in ms, energy in mJ, mean power in W. None = no limit.

        Takes effect at the next infer(). Raises RuntimeUserError for a budget the profile cannot judge
        (energy or power on a board without sensors)."""
        new = {"latency_ms": latency_ms, "energy_mj": energy_mj, "power_w": power_w}
        axes = []
        for key, axis, _ in BUDGET_AXES:
            v = new[key]
            if v is None:
                continue
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise RuntimeUserError("budget %s=%r is not a number" % (key, v))
            if not 0 < v < float("inf"):
                raise RuntimeUserError("budget %s must be a positive number, got %r" % (key, v))
            if all(ps.cost(p, axis) is None for p in self.points):
                reason = (self.profile.get("energy") or {}).get("reason") or "no power sensors"
                raise RuntimeUserError("the profile has no %s measurements (%s); set a latency budget instead"
                                       % (axis, reason))
            new[key] = v
            axes.append(axis)
        self.budget = new
        self._pred.set_budget(new["latency_ms"], new["energy_mj"], new["power_w"])
        self._policy.set_axes(axes)
        self._hyst.reset()
        self._warned = False
        if ("power" in axes or "energy" in axes) and self._power_reader is None:
            self._power_reader = self._make_power_reader()
        now = self._clock()
        j = self._policy.choose(now)
        if j is None:
            j = self._policy.cheapest
            if axes:
                self._warn("no operating point meets %s in the profile (cheapest: %s, %s); running the cheapest"
                           % (self.budget_text(), ps.label(self.points[j]), self._point_cost_text(j)))
        if j != self._cur:
            self._switch(j, now)

    def budget_text(self):
        parts = ["%s %.4g %s" % (key.split("_")[0], self.budget[key], unit)
                 for key, _, unit in BUDGET_AXES if self.budget[key] is not None]
        return ", ".join(parts) or "no budget"

    def _point_cost_text(self, j):
        out = ["%.3g ms p95" % self._p95[j]]
        if self._energy[j] is not None:
            out.append("%.3g mJ" % self._energy[j])
        if self._power[j] is not None:
            out.append("%.3g W" % self._power[j])
        return ", ".join(out)

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

    # ---- the decision --------------------------------------------------------------------------------
    def observe(self, ms, n, now):
        """Record one measured call (ms for n inputs at the current point, ending at `now` on the manager's
        clock) and choose the point of the next call. infer() calls it; so does the decision benchmark."""
        cur = self._cur
        self._pred.record(cur, ms, n)
        if not self._policy.axes:
            self._hyst.observe(None)
            return cur
        self._hyst.observe(ms > self.budget["latency_ms"] if self.budget["latency_ms"] is not None else None)
        if self._power_reader is not None and now >= self._next_power:
            self._read_power(now, cur)
        j, what = self._policy.decide(cur, n, now)
        if what == SWITCH:
            self._switch(j, now)
        elif what == CHEAPEST_MISSES:
            self._warn("%s is missed even at the cheapest operating point (%s) under the current load; "
                       "staying there" % (self.budget_text(), ps.label(self.points[cur])), stacklevel=4)
        return j

    def _switch(self, j, now):
        self._cur = j
        self._pending = j
        self._hyst.switched(now)

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
        self._pred.record_power(w, cur)

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
        kw = ps.point_kwargs(p, None if new_model else prev, getattr(model, "precisions", None), self._pin)
        changed_cluster = prev is None or p.get("cluster") != prev.get("cluster")
        if kw:
            model.set_operating_point(**kw)
        if self._pin and p.get("cpu_freqs_khz") and (prev is None or p["cpu_freqs_khz"] != prev.get("cpu_freqs_khz")):
            for name, khz in sorted(p["cpu_freqs_khz"].items()):
                self._primary.platform.set_cpu_freq(name, khz)  # every cluster of the split at its recorded clock
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
        self.observe(ms, len(x), t2)
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
        return [self.points[j] for j in self._policy.ladder]

    def status(self):
        """A dict for logs: point, budget, observed slowdown, predicted latency, miss rate, counters."""
        tail, _ = self._pred.scales()
        j = self._cur
        return {"point": ps.label(self.points[j]), "point_id": self.points[j].get("id"),
                "level": self.points[j]["level"], "threads": self.points[j].get("threads"),
                "budget": dict(self.budget), "slowdown": tail, "predicted_ms": self._pred.predicted_ms(j),
                "miss_rate": self._hyst.miss_rate, "power_ratio": self._pred.power_ratio, "calls": self.calls,
                "switches": self.switches, "ladder": len(self._policy.ladder)}

    def __repr__(self):
        return "<Manager %s, %d points (%d on the ladder), at %s>" % (
            self.budget_text(), len(self.points), len(self._policy.ladder), ps.label(self.point))
