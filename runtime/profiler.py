"""`python -m runtime profile BUNDLE`: measure a bundle's operating points on this board -> BUNDLE/profile.json.

  python -m runtime profile BUNDLE [--quick] [--clusters a15,a7] [--freqs all|N|KHZ,KHZ]
          [--gpu-freqs all|N|HZ,HZ] [--threads 1,2,4] [--levels 1,2,3] [--backends tflite,onnx]
          [--precisions fp32,int8]
          [--runs N] [--rounds R] [--warmup N] [--energy-s S] [--placements N] [--out FILE]

An operating point is (level, processing element: a CPU cluster or the GPU, thread count, CPU frequency,
GPU frequency, precision: the float32 or int8 signatures where the engine carries both). For each one
this measures batch-1 latency (median and p95 over --runs timed calls after --warmup) and, where the
board has power sensors, energy per inference: the sensors refresh slowly (XU3 INA231 ~0.26 s), so energy
is integrated over --energy-s seconds of back-to-back inferences.
The profile also holds the Pareto fronts (accuracy vs latency, accuracy vs energy), the dynamic range
(max/min latency and energy over all points, over the fronts, over the levels alone), the board's
power mode and clock caps where the platform reports them, and the identity of the bundle it was
measured on (target, groups, level accuracies, engine sha256), so that the manager refuses it for
another bundle. Clusters the sweep is not using are parked at their lowest clock; every clock and the
CPU affinity are restored on exit (also on Ctrl-C; after a SIGKILL: python -m runtime restore).
On a machine without cpufreq (a PC) it profiles levels x thread counts at the current clocks.
Placements (runtime/placement_profile.py): the groups of a level split over PEs (clusters, or halves of
the CPUs), proposed from each group's time alone on each PE and measured as points of their own.
The GPU is a processing element when the engine runs there (TensorRT); --backends tensorrt,onnx
profiles GPU and CPU points together. Needs only the runtime (numpy + one engine binding); the plot is
drawn on the host: python build.py profile BUNDLE (with BUNDLE/profile.json copied back).
"""
import argparse
import os
import platform as pyplatform
import time

import numpy as np

from runtime import load
from runtime import profile_schema as ps
from runtime.bundle import atomic_write_json, load_golden
from runtime.cli import module_versions, utc_now
from runtime.errors import RuntimeUserError

QUICK = {"runs": 90, "warmup": 5, "energy_s": 1.0, "freqs": "3", "gpu_freqs": "3", "rounds": 3, "placements": 1}
FULL = {"runs": 300, "warmup": 20, "energy_s": 3.0, "freqs": "6", "gpu_freqs": "5", "rounds": 3, "placements": 2}


def _int_list(spec, flag):
    """'1,2,4' -> [1, 2, 4] (positive integers) or None when not given."""
    if spec in (None, ""):
        return None
    try:
        vals = [int(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise RuntimeUserError("%s takes positive integers separated by commas, e.g. 1,2; got %r" % (flag, spec))
    return vals


# ---- choosing the points ---------------------------------------------------------------------------
def pick(values, spec, what):
    """Select from available `values` (sorted) by spec: 'all', a count N (evenly spaced, ends included),
    or an explicit comma list (each must be available)."""
    values = sorted(values)
    spec = str(spec).strip()
    if spec == "all":
        return values
    if "," not in spec and spec.isdigit() and int(spec) < 100:
        n = int(spec)
        if n <= 0:
            raise RuntimeUserError("%s: a count must be positive" % what)
        if n >= len(values):
            return values
        if n == 1:
            return [values[-1]]
        return sorted(set(values[int(round(i * (len(values) - 1) / float(n - 1)))] for i in range(n)))
    try:
        want = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise RuntimeUserError("%s: %r is not 'all', a count or a comma list of numbers" % (what, spec))
    bad = [v for v in want if v not in values]
    if bad:
        raise RuntimeUserError("%s: %s not available; valid: %s" % (what, ", ".join(map(str, bad)),
                                                                  " ".join(map(str, values))))
    return sorted(set(want))


def default_threads(cores, quick):
    if quick:
        return sorted(set([1, cores]))
    out, t = set([1, cores]), 2
    while t < cores:
        out.add(t)
        t *= 2
    return sorted(out)


def plan_points(models, plat, opts):
    """[(model, point dict without measurements)], ordered so that costly switches are rare."""
    dvfs = plat.dvfs_available
    clusters = list(plat.clusters.items())
    pin = len(clusters) > 1 or dvfs
    if opts.clusters:
        names = [plat.cluster(c.strip()) for c in opts.clusters.split(",") if c.strip()]
        clusters = [(n, c) for n, c in clusters if n in names]
    threads_spec, want_levels = _int_list(opts.threads, "--threads"), _int_list(opts.levels, "--levels")
    plan = []
    for m in models:
        levels = want_levels or m.levels
        bad = [k for k in levels if k not in m.levels]
        if bad:
            raise RuntimeUserError("levels %s are not in this bundle (levels %s)" % (bad, m.levels))
        if m.backend.name == "tensorrt":  # the GPU runs it; the host side stays on the first cluster at full clock
            name, info = clusters[0]
            cpu = max(info.frequencies_khz) if dvfs and info.frequencies_khz else None
            gpu = plat.gpu
            gfreqs = (pick(gpu.frequencies_hz, opts.gpu_freqs, "--gpu-freqs")
                      if dvfs and gpu is not None and gpu.available and gpu.frequencies_hz else [None])
            for g in sorted(gfreqs, key=lambda v: -(v or 0)):
                for k in levels:
                    plan.append((m, {"level": k, "backend": m.backend.name, "pe": "gpu",
                                     "cluster": name if pin else None, "threads": None,
                                     "cpu_freq_khz": cpu, "gpu_freq_hz": g}))
            continue
        for name, info in clusters:
            cores = len(info.cpus)
            thr = [t for t in (threads_spec or default_threads(cores, opts.quick)) if 1 <= t <= cores]
            if not thr:
                raise RuntimeUserError("--threads %s: cluster %s has %d CPUs" % (opts.threads, name, cores))
            freqs = (pick(info.frequencies_khz, opts.freqs, "--freqs (%s)" % name)
                     if dvfs and info.available and info.frequencies_khz else [None])
            for f in sorted(freqs, key=lambda v: -(v or 0)):
                for t in thr:
                    for prec in _precisions(m, opts):  # issue 13: int8 and float32 are both measured
                        for k in levels:
                            plan.append((m, {"level": k, "backend": m.backend.name, "pe": name,
                                             "cluster": name if pin else None, "threads": t,
                                             "cpu_freq_khz": f, "gpu_freq_hz": None, "precision": prec}))
    return plan


def _precisions(m, opts):
    want = [p.strip() for p in opts.precisions.split(",")] if getattr(opts, "precisions", None) else None
    if want is None:
        return m.precisions
    bad = [p for p in want if p not in m.precisions]
    if bad:
        raise RuntimeUserError("--precisions %s: this bundle's %s engine carries %s" % (
            ",".join(bad), m.backend.name, ", ".join(m.precisions)))
    return want


# ---- measuring ---------------------------------------------------------------------------------------
def _switch_kind(prev, p):
    if prev is None:
        return None
    for key, kind in (("backend", "engine"), ("placement", "placement"), ("precision", "precision"),
                      ("cluster", "cluster"),
                      ("cpu_freq_khz", "cpu_freq"), ("gpu_freq_hz", "gpu_freq"), ("threads", "threads"),
                      ("level", "level")):
        if prev.get(key) != p.get(key):
            return kind
    return None


def measure(bundle, opts, log=print, board=None, sysfs_root="/", state_dir=None):
    """Run the sweep; returns the profile dict (not yet written)."""
    t_start = time.time()
    names = ["auto"] if opts.backends in (None, "", "auto") else [b.strip() for b in opts.backends.split(",")]
    models = []
    try:
        for name in names:
            models.append(load(bundle, backend=name, board=board, sysfs_root=sysfs_root, state_dir=state_dir))
        plat = models[0].platform
        for m in models[1:]:
            m.use_platform(plat)  # one Platform per process: it holds the clock lock
        with plat:
            prof = _sweep(bundle, models, plat, opts, log)
    finally:
        for m in models:
            m.close()
    prof["duration_s"] = round(time.time() - t_start, 2)
    return prof


def _input(model):
    try:
        x = load_golden(model.bundle_dir, model.manifest)["input"][:1]
        return np.ascontiguousarray(x, np.float32)
    except Exception:  # noqa: BLE001 - any readable input will do for timing
        return np.zeros((1,) + tuple(model.input_shape), np.float32)


def _sweep(bundle, models, plat, opts, log):
    man = models[0].manifest
    plan = plan_points(models, plat, opts)
    meter = plat.power
    energy_s = opts.energy_s if meter else None
    park = {}
    if plat.dvfs_available and len(plat.clusters) > 1:
        park = dict((n, min(c.frequencies_khz)) for n, c in plat.clusters.items() if c.available and c.frequencies_khz)
    x = _input(models[0])
    from runtime.placement_profile import placement_points  # issue 14: splits of a level over PEs
    pin = len(plat.clusters) > 1 or plat.dvfs_available
    for m in models:
        levels = [k for k in (_int_list(opts.levels, "--levels") or m.levels) if k in m.levels]
        split = placement_points(m, plat, levels, opts.placements, x, max(20, opts.runs // 3), pin, log)
        for p in split:  # measured at the engine's default precision, which the sweep sets back before each
            p.setdefault("precision", m.precision)
        plan += [(m, p) for p in split]
    # the caps that held during the sweep (nvpmodel on a Jetson), where the platform layer reports them
    power_mode = plat.power_mode() if hasattr(plat, "power_mode") else None
    per_point_s = (opts.warmup + opts.runs) * 0.005 + (energy_s or 0)
    log("profiling %s: %d operating points (%s), %d timed runs each%s; DVFS %s; power %s" % (
        bundle, len(plan), ", ".join(sorted(set(m.backend.name for m, _ in plan))), opts.runs,
        ", energy over %.1f s each" % energy_s if energy_s else "",
        "on" if plat.dvfs_available else "off (%s)" % plat.dvfs_reason,
        "on (%s)" % ", ".join(meter.rail_names) if meter else "off (%s)" % meter.reason))
    if len(plan) * per_point_s > 60:
        log("  about %.0f minutes at a few ms per inference" % (len(plan) * per_point_s / 60.0))
    idle_w = None
    if meter:
        meter.start()
        time.sleep(min(2.0, energy_s))
        idle_w = meter.stop().mean_power_w
    points, switch_ms, prev, prev_model = [], {}, None, None
    # Rounds: every point is measured `rounds` times, interleaved, so that a transient disturbance
    # (a daemon waking up) spoils one round of a point, not all of it; p95 is the median of the rounds' p95s.
    rounds = max(1, min(opts.rounds, opts.runs // 5))
    samples = [[] for _ in plan]
    round_p95 = [[] for _ in plan]
    energy = [None] * len(plan)
    for r in range(rounds):
        runs = opts.runs // rounds + (opts.runs % rounds if r == 0 else 0)
        warm = opts.warmup if r == 0 else max(2, opts.warmup // rounds)
        for i, (m, p) in enumerate(plan):
            kw = dict(level=p["level"], placement=p.get("placement"))
            if p.get("precision"):
                kw["precision"] = p["precision"]
            if p["cluster"] is not None:
                kw["cluster"] = p["cluster"]
            for key in ("cpu_freq_khz", "gpu_freq_hz", "threads"):
                if p[key] is not None:
                    kw[key] = p[key]
            t = time.perf_counter()
            m.set_operating_point(**kw)
            if park and p["cluster"] is not None and (prev is None or prev.get("cluster") != p["cluster"]):
                for name, khz in park.items():
                    if name != p["cluster"]:
                        plat.set_cpu_freq(name, khz)
            for name, khz in sorted((p.get("cpu_freqs_khz") or {}).items()):
                plat.set_cpu_freq(name, khz)  # a placement runs each of its clusters at the clock it records
            m.infer(x)
            dt = (time.perf_counter() - t) * 1e3
            kind = _switch_kind(prev, p) if prev_model is m or prev is None else "engine"
            if kind:
                switch_ms.setdefault(kind, []).append(dt)
            prev, prev_model = p, m
            for _ in range(warm):
                m.infer(x)
            ts = []
            for _ in range(runs):
                t = time.perf_counter()
                m.infer(x)
                ts.append(time.perf_counter() - t)
            samples[i].extend(ts)
            round_p95[i].append(ps.latency_stats(ts)["p95"])
            if energy_s and r == rounds - 1:
                n = 0
                meter.start()
                t_end = time.perf_counter() + energy_s
                while time.perf_counter() < t_end:
                    m.infer(x)
                    n += 1
                e = meter.stop()
                energy[i] = (e.energy_j * 1e3 / n, e.mean_power_w, n, e.samples)
    for i, (m, p) in enumerate(plan):
        rec = dict(p)
        rec["id"] = i
        rec["accuracy"] = m.accuracy_of(p["level"], p.get("precision") or "fp32")
        lat = ps.latency_stats(samples[i])
        lat["p95_all"], lat["p95"], lat["p95_rounds"] = lat["p95"], float(np.median(round_p95[i])), round_p95[i]
        rec["latency_ms"] = lat
        rec["energy_mj"] = rec["power_w"] = None
        if energy[i] is not None:
            rec["energy_mj"], rec["power_w"], rec["energy_runs"], rec["energy_samples"] = energy[i]
        points.append(rec)
        log("  %-22s median %8.3f ms  p95 %8.3f ms%s" % (
            ps.label(rec), lat["median"], lat["p95"],
            "  %8.3f mJ  %6.3f W" % (rec["energy_mj"], rec["power_w"]) if energy[i] else ""))
    m0 = models[0]
    host = module_versions(["numpy"])
    host.update(machine=pyplatform.machine(), node=pyplatform.node(), cpus=os.cpu_count(),
                engines=dict((m.backend.name, getattr(m.backend, "binding", m.backend.name)) for m in models))
    prof = {
        "schema": ps.SCHEMA, "schema_version": ps.SCHEMA_VERSION, "created": utc_now(),
        "tool": "python -m runtime profile",
        "bundle": dict(ps.bundle_identity(man), dir=os.path.abspath(bundle), manifest_created=man.get("created"),
                       arch=man["model"].get("arch")),
        "host": host,
        "platform": plat.describe(),
        "power_mode": power_mode,
        "settings": {"batch": 1, "runs": opts.runs, "rounds": rounds, "warmup": opts.warmup, "energy_s": energy_s,
                     "quick": bool(opts.quick), "park_other_clusters": bool(park),
                     "latency": "perf_counter around one Model.infer call, after warm-up; points measured in "
                                "interleaved rounds; p95 = median of the rounds' p95 (p95_all: over all runs); "
                                "p95 = " + ps.P95_METHOD,
                     "energy": "power integrated (sample-and-hold) over energy_s of back-to-back inferences "
                               "divided by their count" if energy_s else None},
        "energy": {"available": bool(meter), "reason": meter.reason, "rails": meter.rail_names,
                   "total": meter.total if meter else None, "idle_power_w": idle_w},
        "levels": [{"level": lv["level"], "accuracy": lv.get("test_accuracy"), "macs": lv.get("macs")}
                   for lv in man["levels"]],
        "switch_ms": dict((k, {"median": float(np.median(v)), "max": float(np.max(v)), "n": len(v)})
                          for k, v in sorted(switch_ms.items())),
        "points": points,
    }
    prof.update(ps.summarize(points))
    if not m0.accuracy or any(v is None for v in m0.accuracy.values()):
        prof["note"] = "some levels have no test accuracy in the manifest: fronts rank them by level"
    return prof


# ---- reporting ---------------------------------------------------------------------------------------
def summary_lines(prof):
    byid = dict((p["id"], p) for p in prof["points"])
    out = []
    for axis, unit in (("latency", "ms"), ("energy", "mJ")):
        ids = prof["fronts"].get(axis) or []
        if not ids:
            continue
        out.append("%s front (%d of %d points): %s" % (axis, len(ids), len(prof["points"]), "  ".join(
            "%s %.3g%s %s" % (ps.label(byid[i]), ps.cost(byid[i], axis), unit,
                              "" if byid[i].get("accuracy") is None else "%.1f%%" % (100 * byid[i]["accuracy"]))
            for i in ids)))
    dr = prof["dynamic_range"]
    for key, unit in (("latency_ms", "ms"), ("energy_mj", "mJ")):
        a, f, lv = dr["points"][key], dr["front"][key], dr["levels"][key]
        if a:
            out.append("dynamic range of %s: all points %.3g-%.3g %s (%.1fx), front %.1fx, levels alone %s" % (
                key.split("_")[0], a["min"], a["max"], unit, a["ratio"] or 0, (f or {}).get("ratio") or 0,
                "%.1fx" % lv["ratio"] if lv and lv["ratio"] else "n/a"))
    return out


# ---- command line ------------------------------------------------------------------------------------
def add_arguments(p):
    p.add_argument("bundle", help="bundle directory (holds manifest.json)")
    p.add_argument("--quick", action="store_true", help="fewer runs, 3 frequencies, threads 1 and all (minutes)")
    p.add_argument("--clusters", default=None, help="CPU clusters to sweep, names or aliases (default: all)")
    p.add_argument("--freqs", default=None, help="CPU frequencies per cluster: 'all', a count N evenly spaced "
                                                 "(default 6, quick 3), or kHz,kHz")
    p.add_argument("--gpu-freqs", default=None, help="GPU frequencies: 'all', a count (default 5, quick 3) or Hz,Hz")
    p.add_argument("--threads", default=None, help="thread counts, e.g. 1,2,4 (default 1, powers of 2, all cores; "
                                                   "quick: 1 and all)")
    p.add_argument("--levels", default=None, help="levels to profile, e.g. 1,2 (default: all)")
    p.add_argument("--backends", default="auto", help="engine bindings, e.g. tensorrt,onnx (default: the bundle's)")
    p.add_argument("--precisions", default=None,
                   help="precisions to sweep, e.g. fp32,int8 (default: every one the engine carries)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per point, all rounds (default 300, quick 90)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per point (default 20, quick 5)")
    p.add_argument("--rounds", type=int, default=None,
                   help="measure every point this many times, interleaved (default 3); p95 = median of the rounds'")
    p.add_argument("--energy-s", type=float, default=None,
                   help="seconds of inferences per point for energy (default 3, quick 1; sensors refresh slowly)")
    p.add_argument("--placements", type=int, default=None,
                   help="splits of each level over PEs to measure, proposed from per-group times (default 2, "
                        "quick 1; 0: none)")
    p.add_argument("--out", default=None, help="profile file (default BUNDLE/profile.json)")
    p.add_argument("--board", default=None, help=argparse.SUPPRESS)        # tests: a board file
    p.add_argument("--sysfs-root", default="/", help=argparse.SUPPRESS)    # tests: a fake sysfs tree
    p.add_argument("--state-dir", default=None, help=argparse.SUPPRESS)
    return p


def options(bundle, **kw):
    """The options namespace run() takes, with every flag at its default unless given (for host tools, tests)."""
    opts = add_arguments(argparse.ArgumentParser()).parse_args([bundle])
    for k, v in kw.items():
        if not hasattr(opts, k):
            raise TypeError("no profiler option %r" % k)
        setattr(opts, k, v)
    return opts


def fill_defaults(opts):
    d = QUICK if opts.quick else FULL
    for k in ("runs", "warmup", "energy_s", "freqs", "gpu_freqs", "rounds", "placements"):
        if getattr(opts, k, None) is None:
            setattr(opts, k, d[k])
    for flag, v, low in (("--runs", opts.runs, 5), ("--warmup", opts.warmup, 0), ("--rounds", opts.rounds, 1),
                         ("--placements", opts.placements, 0)):
        if v < low:
            raise RuntimeUserError("%s must be at least %d, got %d (median and p95 need a few samples)"
                                   % (flag, low, v))
    _int_list(opts.threads, "--threads")  # refused here, before any engine loads
    _int_list(opts.levels, "--levels")
    if not 0 < opts.energy_s <= 600:
        raise RuntimeUserError("--energy-s must be a number of seconds in (0, 600], got %r" % opts.energy_s)
    return opts


def run(opts, log=print):
    """Measure and write the profile (atomically). Returns (profile, path)."""
    fill_defaults(opts)
    out = opts.out or os.path.join(opts.bundle, ps.PROFILE_FILE)
    if opts.out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise RuntimeUserError("--out %s: the directory %s does not exist; create it or choose another file"
                               % (out, os.path.dirname(os.path.abspath(out))))
    prof = measure(opts.bundle, opts, log, board=opts.board, sysfs_root=opts.sysfs_root, state_dir=opts.state_dir)
    atomic_write_json(out, prof)
    for line in summary_lines(prof):
        log(line)
    log("wrote %s (%d points, %.1f s); plot it on the host: python build.py profile BUNDLE (with this file as "
        "BUNDLE/%s)" % (out, len(prof["points"]), prof["duration_s"], ps.PROFILE_FILE))
    return prof, out


def main(args):
    run(args)
    return 0
