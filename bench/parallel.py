"""Groups in parallel (issue 14): the full level split over two CPUs against one core and two-thread kernels.

Timed side by side (bench.latency.interleaved), per batch size the bundle carries:
  one core      runtime.load(threads=1), the default path: one interpreter, one engine thread (unpinned)
  two threads   runtime.load(threads=2): one interpreter whose XNNPACK kernels use two threads
  split         the threads=1 model with a placement over two CPUs, one pinned worker and interpreter each
                (runtime.workers), combined when both are done. The groups are split by their own measured
                times (the profiler's per-group timing and longest-first proposal, runtime.placement_profile):
                with unequal groups, halving the group list leaves one CPU idle most of the call
plus the hand-off (Plan.ping: to both workers and back with no work) and, at batch 1, the fraction of the
two-thread GEMM peak (bench.peak) that the better of split and two threads reaches.
"""
import json
import os

import numpy as np

from bench.latency import interleaved
from bench.stats import paired_ratios, summarize
from compile.errors import UserError

GOALS = {"split_vs_one_core_b32": 0.55, "split_vs_one_core_b1": 0.7, "peak_fraction_b1": 0.75}


def default_split(model, cpus, x, runs):
    """The full level's split over the first two usable CPUs that the profiler would propose first: each group
    timed alone on each CPU, then longest-first to the CPU that finishes it first (runtime.placement_profile).
    Returns (placement, {"group_ms", "handoff_ms", "predicted_ms"}), or (None, None) with fewer than two CPUs."""
    from runtime.placement_profile import group_times, propose
    if len(cpus) < 2:
        return None, None
    pes = ["cpu:%d" % c for c in cpus[:2]]
    times, handoff = group_times(model, pes, x, runs)
    (predicted, placement), = propose(model.levels[-1], times, handoff, 1)
    return placement, {"group_ms": times, "handoff_ms": handoff, "predicted_ms": predicted}


def parse_split(text):
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UserError("--split is not JSON (%s); write e.g. '{\"cpu:0\": [1, 2], \"cpu:1\": [3, 4]}'" % exc)
    if not isinstance(doc, dict):
        raise UserError("--split must be a JSON object of PE -> groups, e.g. '{\"cpu:0\": [1, 2], \"cpu:1\": [3, 4]}'")
    return doc


def measure_parallel(bundle, in_shape, full_macs, peaks, batches, mode, log, split=None):
    import runtime
    cpus = sorted(os.sched_getaffinity(0))
    one = runtime.load(bundle, backend="tflite", threads=1)
    levels = one.levels
    chosen = None
    if split is None:
        x1 = np.random.default_rng(14).standard_normal((1,) + tuple(in_shape)).astype(np.float32)
        split, chosen = default_split(one, cpus, x1, max(20, 10 * mode["rounds"]))
    if split is None:
        one.close()
        return {"skipped": "needs two usable CPUs (this process may use %s)" % cpus}
    seq, two = (runtime.load(bundle, backend="tflite", threads=t) for t in (1, 2))
    full = levels[-1]
    try:
        one.set_operating_point(level=full, placement=split)
        plan = one._placement
        rng = np.random.default_rng(14)
        out = {"placement": one.placement, "level": full, "batches": {}, "goals": GOALS, "chosen_by": chosen}
        if chosen:
            log("  split chosen from per-group times (batch 1, ms): %s; predicted %.3f ms" % (
                "; ".join("%s %s" % (p, " ".join("%.3f" % t for t in ts)) for p, ts in sorted(chosen["group_ms"].items())),
                chosen["predicted_ms"]))
        for b in batches:
            x = rng.standard_normal((b,) + tuple(in_shape)).astype(np.float32)
            items = [("one_core", lambda: seq.infer(x)), ("two_threads", lambda: two.infer(x)),
                     ("split", lambda: one.infer(x))]
            samples, _ = interleaved(items, mode["rounds"], mode["target_s"], mode["warmup"])
            row = {k: summarize(v) for k, v in samples.items()}
            row["split_vs_one_core"] = paired_ratios(samples["split"], samples["one_core"])
            row["split_vs_two_threads"] = paired_ratios(samples["split"], samples["two_threads"])
            row["max_abs_diff_vs_one_core"] = float(np.abs(one.infer(x) - seq.infer(x)).max())
            out["batches"][str(b)] = row
            log("  batch %d: one core %.3f ms, two threads %.3f ms, split %.3f ms (%.2fx one core, %.2fx two threads)"
                % (b, row["one_core"]["median"] * 1e3, row["two_threads"]["median"] * 1e3, row["split"]["median"] * 1e3,
                   row["split_vs_one_core"]["median"], row["split_vs_two_threads"]["median"]))
        out["handoff"] = _handoff(plan, mode)
        log("  hand-off to %d workers and back: %.1f us (median)" % (len(plan.parts), out["handoff"]["median"] * 1e6))
        out["peak_fraction_b1"] = _peak_fraction(out["batches"].get("1"), full_macs, peaks)
    finally:
        for m in (one, seq, two):
            m.close()
    return out


def _handoff(plan, mode):
    for _ in range(50):
        plan.ping()
    samples, _ = interleaved([("ping", plan.ping)], mode["rounds"], mode["target_s"], 0)
    return summarize(samples["ping"])


def _peak_fraction(row, full_macs, peaks):
    """MACs/s of the better of split and two threads at batch 1 over the two-thread GEMM peak."""
    peak = [p for p in peaks if p["threads"] == 2]
    if row is None or not peak:
        return None
    best = min(row["split"]["median"], row["two_threads"]["median"])
    return {"fraction": full_macs / best / peak[0]["peak_macs_per_s"],
            "best": "split" if row["split"]["median"] <= row["two_threads"]["median"] else "two_threads",
            "peak_macs_per_s": peak[0]["peak_macs_per_s"]}


def checks(par):
    """The issue-14 goals as bench checks (reported, not fatal)."""
    if not par or "skipped" in par:
        return []
    rows, out = par["batches"], []
    for b, goal in (("32", "split_vs_one_core_b32"), ("1", "split_vs_one_core_b1")):
        if b in rows:
            v = rows[b]["split_vs_one_core"]["median"]
            out.append({"name": "groups split over two CPUs <= %.2fx one core at batch %s" % (GOALS[goal], b),
                        "value": v, "limit": GOALS[goal], "ok": v <= GOALS[goal]})
    if "32" in rows:
        v = rows["32"]["split_vs_two_threads"]["median"]
        out.append({"name": "groups split over two CPUs no slower than two-thread kernels at batch 32",
                    "value": v, "limit": 1.0, "ok": v <= 1.0})
    pf = par.get("peak_fraction_b1")
    if pf:
        out.append({"name": "batch 1 on both cores (best of split, two threads) >= 75% of the GEMM peak",
                    "value": pf["fraction"], "limit": GOALS["peak_fraction_b1"],
                    "ok": pf["fraction"] >= GOALS["peak_fraction_b1"]})
    return out


def report_section(res):
    """report.md's section on groups in parallel (bench/report.py lists it among its sections)."""
    from bench.report import DASH, _ratio, _spread, _table
    par = res.get("parallel")
    head = ["## Groups in parallel (issue 14)", ""]
    if not par:
        return []
    if "skipped" in par:
        return head + ["Not measured: %s." % par["skipped"], ""]
    rows = [(b, _spread(r["one_core"]), _spread(r["two_threads"]), _spread(r["split"]), _ratio(r["split_vs_one_core"]),
             _ratio(r["split_vs_two_threads"]), "%.1e" % r["max_abs_diff_vs_one_core"]) for b, r in par["batches"].items()]
    pf = par.get("peak_fraction_b1")
    ch = par.get("chosen_by")
    why = "" if not ch else (" The split is the profiler's first proposal from each group's time alone on each CPU "
                             "(batch 1, ms: %s; runtime/placement_profile.py)." % "; ".join(
                                 "%s %s" % (p, " / ".join("%.3f" % t for t in ts)) for p, ts in sorted(ch["group_ms"].items())))
    return head + ["Level %d with placement `%s` (runtime/placement.py), timed interleaved with one interpreter on "
                   "one thread and one on two threads; ms, median (p10-p90). Hand-off to the workers and back: "
                   "%.1f us. Batch 1, both cores: %s of the two-thread GEMM peak (%s).%s"
                   % (par["level"], json.dumps(par["placement"], sort_keys=True), par["handoff"]["median"] * 1e6,
                      DASH if not pf else "%.0f%%" % (100 * pf["fraction"]), DASH if not pf else pf["best"], why), ""] + _table(
        ("batch", "one core", "two threads", "split", "split / one core", "split / two threads", "max abs diff"),
        rows) + [""]
