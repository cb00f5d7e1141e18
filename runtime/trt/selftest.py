"""python -m runtime trt-selftest BUNDLE: check a TensorRT engine on the board (golden.npz) and time its levels.

Builds the engine first (runtime.trt.builder) when BUNDLE has none, when --precision differs from the one
there, or with --rebuild. Then, for every level: compares the logits with golden.npz (tolerance
golden.atol_fp16 for fp16 engines, golden.atol for fp32, plus golden.rtol) at the golden batch and at
batch 1, and measures the median and p90 latency of run_level at batch 1 and at the largest batch.

--mode if is a trial: it measures the per-group engines and the single `If` engine on this board and keeps
the `If` engine only if it matches golden.npz and is faster at batch 1 at every level; otherwise it rebuilds
the per-group engines (the default) and says why. Results go to BUNDLE/trt_selftest.json, one entry per
mode. Exit 1 on a mismatch or an expected failure.
"""
import argparse
import json
import os
import time

import numpy as np

from runtime.bundle import atomic_write_json, load_golden, read_engine_record, verify_files
from runtime.cli import module_versions, utc_now
from runtime.errors import RuntimeUserError
from runtime.trt import MODES, TensorRTError, build_hint
from runtime.trt import builder
from runtime.trt.backend import TensorRTBackend

RESULT = "trt_selftest.json"
RESULT_SCHEMA, RESULT_SCHEMA_VERSION = "dynn-trt-selftest", 2
clock = time.perf_counter  # module-level so that a test can drive time through a fake engine


def current_record(bundle):
    try:
        return read_engine_record(bundle, None, "rebuild it")
    except RuntimeUserError:
        return None


def ensure_engine(bundle, mode, args):
    """The record of an engine of `mode` (None: whatever is there, else per-group), built if needed."""
    record = current_record(bundle)
    reason = None
    if record is None:
        reason = "no usable engine yet"
    elif args.rebuild:
        reason = "--rebuild"
    elif mode and mode != record["mode"]:
        reason = "engine is %s mode, %s wanted" % (record["mode"], mode)
    elif args.precision and args.precision != record["precision"]:
        reason = "engine is %s, --precision %s asked" % (record["precision"], args.precision)
    if reason is None:
        return record
    mode = mode or "per-group"
    print("building the TensorRT engine (%s): %s mode" % (reason, mode))
    return builder.build(bundle, mode, args.precision, args.workspace_mb)


def timings(fn, warmup, runs):
    """(median ms, p90 ms) of fn() over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    t = np.empty(runs)
    for i in range(runs):
        t0 = clock()
        fn()
        t[i] = clock() - t0
    return float(np.median(t) * 1e3), float(np.percentile(t, 90) * 1e3)


def check_levels(backend, manifest, golden):
    """One row per level: max |diff|, tolerance, pass, top-1 agreement with golden, for the whole golden
    batch (chunked by max_batch if larger) and for its first image alone (batch 1)."""
    g = manifest.get("golden", {})
    atol = float(g.get("atol_fp16", 0.05) if backend.precision == "fp16" else g.get("atol", 1e-4))
    rtol = float(g.get("rtol", 0.0))
    x = golden["input"].astype(np.float32)
    rows = []
    for level in range(1, backend.groups + 1):
        ref = golden["level%d" % level].astype(np.float32)
        got, got1 = backend.run_level(x, level), backend.run_level(x[:1], level)
        diff = max(float(np.max(np.abs(got - ref))), float(np.max(np.abs(got1 - ref[:1]))))
        ok = bool(np.all(np.abs(got - ref) <= atol + rtol * np.abs(ref))
                  and np.all(np.abs(got1 - ref[:1]) <= atol + rtol * np.abs(ref[:1])))
        rows.append({"level": level, "max_abs_diff": diff, "atol": atol, "rtol": rtol, "ok": ok,
                     "top1_agree": float(np.mean(got.argmax(1) == ref.argmax(1))), "n": int(len(x))})
    return rows


def measure(backend, x, warmup, runs):
    """{level: {batch: (median ms, p90 ms)}} at batch 1 and at max_batch."""
    big = np.ascontiguousarray(np.resize(x, (backend.max_batch,) + x.shape[1:]), dtype=np.float32)
    out = {}
    for level in range(1, backend.groups + 1):
        out[level] = {}
        for b in sorted({1, backend.max_batch}):
            xb = big[:b]
            out[level][b] = timings(lambda: backend.run_level(xb, level), warmup, runs)
    return out


def ladder_advice(mode, ratio, flat_ratio):
    if ratio >= flat_ratio:
        return "the ladder is real: lower levels are faster"
    if mode == "if":
        return "the ladder is flat: the If engine pays for every branch; keep the per-group engines (the default)"
    return ("the ladder is flat even with one engine per group: at this size the GPU time is launch/copy bound, "
            "so levels save little latency on this board")


def print_report(run, manifest):
    lat, rows, bmax = run["latency_ms"], run["levels"], run["batch_max"]
    macs = {int(lv["level"]): lv.get("macs") for lv in manifest.get("levels", [])}
    print("TensorRT %s on %s: %s mode, %s, engines %s (%.2f MB; their ONNX: %.2f MB)" % (
        run["tensorrt_version"], run["gpu"] or "unknown GPU", run["mode"], run["precision"],
        ", ".join(sorted(run["engine_files"])), run["engine_bytes"] / 1e6, run["onnx_bytes"] / 1e6))
    head = "%-5s %10s %7s %5s %7s %10s %8s" % ("level", "max|diff|", "tol", "ok", "top1=", "b1 ms", "b1 p90")
    if bmax > 1:
        head += " %11s %10s" % ("b%d ms" % bmax, "img/s")
    print(head + " %9s %9s" % ("vs lvl 1", "MACs x"))
    base = lat["1"]["1"][0]
    for r in rows:
        k = str(r["level"])
        line = "%-5d %10.2e %7.0e %5s %6.1f%% %10.3f %8.3f" % (
            r["level"], r["max_abs_diff"], r["atol"], "yes" if r["ok"] else "NO", 100 * r["top1_agree"],
            lat[k]["1"][0], lat[k]["1"][1])
        if bmax > 1:
            line += " %11.3f %10.0f" % (lat[k][str(bmax)][0], 1e3 * bmax / lat[k][str(bmax)][0])
        m = macs.get(r["level"]), macs.get(1)
        print(line + " %9.2f %9s" % (lat[k]["1"][0] / base, "%.2f" % (m[0] / m[1]) if all(m) else "-"))
    print("ladder: level %d / level 1 = %.2f at batch 1 (flat below %.2f): %s"
          % (len(rows), run["ladder_ratio"], run["flat_ratio"], run["advice"]))


def check_engine(bundle, manifest, golden, args):
    """Check and time the engine now in the bundle; print its table; return its run entry."""
    backend = TensorRTBackend(bundle, manifest)
    try:
        record = backend.record
        rows = check_levels(backend, manifest, golden)
        lat = measure(backend, golden["input"], args.warmup, args.runs)
        max_batch = backend.max_batch
    finally:
        backend.close()
    ratio = lat[len(rows)][1][0] / lat[1][1][0]
    run = {
        "mode": record["mode"], "precision": record["precision"], "tensorrt_version": record["tensorrt_version"],
        "gpu": record["gpu"], "engine_built": record["built"], "engine_files": record["files"],
        "profiles": record["profiles"], "fallback": record.get("fallback"),
        "engine_bytes": sum(f["size"] for f in record["files"].values()),
        "onnx_bytes": sum(manifest["files"][rel]["size"] for rel in record["sources"] if rel in manifest["files"]),
        "batch_max": max_batch, "levels": rows, "outputs_ok": all(r["ok"] for r in rows),
        "latency_ms": {str(k): {str(b): list(v) for b, v in per.items()} for k, per in lat.items()},
        "warmup": args.warmup, "runs": args.runs, "ladder_ratio": ratio, "flat_ratio": args.flat_ratio,
        "ladder_flat": ratio < args.flat_ratio, "advice": ladder_advice(record["mode"], ratio, args.flat_ratio),
        "when": utc_now(), "versions": module_versions(("tensorrt", "numpy", "pycuda", "cuda")),
    }
    print_report(run, manifest)
    return run


def if_verdict(if_run, pg_run):
    """(keep the If engine?, why): only when it is right and faster at batch 1 at every level."""
    if not if_run["outputs_ok"]:
        return False, "the If engine does not match golden.npz"
    slower = [(k, if_run["latency_ms"][k]["1"][0], pg_run["latency_ms"][k]["1"][0])
              for k in sorted(if_run["latency_ms"], key=int)
              if if_run["latency_ms"][k]["1"][0] >= pg_run["latency_ms"][k]["1"][0]]
    if slower:
        return False, "the If engine is not faster at batch 1: " + ", ".join(
            "level %s %.3f ms vs %.3f ms per-group" % s for s in slower)
    return True, "the If engine is faster at batch 1 at every level"


def print_comparison(runs):
    print("modes compared (from %s):" % RESULT)
    print("  %-10s %12s  %s" % ("mode", "engines", "batch-1 median ms per level"))
    for mode in MODES:
        r = runs[mode]
        print("  %-10s %10.2f MB  %s" % (mode, r["engine_bytes"] / 1e6, " ".join(
            "%.3f" % r["latency_ms"][k]["1"][0] for k in sorted(r["latency_ms"], key=int))))


def write_result(bundle, runs, decision=None):
    path = os.path.join(bundle, RESULT)
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = {}
    doc = old if isinstance(old, dict) and old.get("schema_version") == RESULT_SCHEMA_VERSION else {}
    doc.update({"schema": RESULT_SCHEMA, "schema_version": RESULT_SCHEMA_VERSION})
    doc.setdefault("runs", {}).update(runs)
    if decision is not None:
        doc["if_trial"] = decision
    atomic_write_json(path, doc)


def try_if(bundle, manifest, golden, args):
    """Measure per-group and If on this board; keep If only if it wins. Returns the runs."""
    ensure_engine(bundle, "per-group", args)
    pg = check_engine(bundle, manifest, golden, args)
    record = builder.build(bundle, "if", args.precision or pg["precision"], args.workspace_mb)
    if record["mode"] != "if":  # the If build failed and the builder fell back
        decision = {"kept": "per-group", "why": record["fallback"], "when": utc_now()}
        write_result(bundle, {"per-group": pg}, decision)
        print("if trial: %s" % record["fallback"])
        return {"per-group": pg}
    ifr = check_engine(bundle, manifest, golden, args)
    keep, why = if_verdict(ifr, pg)
    runs = {"per-group": pg, "if": ifr}
    print_comparison(runs)
    if not keep:
        builder.build(bundle, "per-group", pg["precision"], args.workspace_mb)
    write_result(bundle, runs, {"kept": "if" if keep else "per-group", "why": why, "when": utc_now()})
    print("if trial: %s: %s" % (why, "kept the If engine" if keep else "rebuilt the per-group engines"))
    return runs


def main(args):
    if args.runs < 1 or args.warmup < 0:
        raise TensorRTError("--runs must be >= 1 and --warmup >= 0")
    bundle = args.bundle
    manifest = builder.load_manifest(bundle)  # refuses a bundle without a TensorRT entry first
    verify_files(bundle, manifest)  # golden.npz and the ONNX files included
    golden = load_golden(bundle, manifest)
    if args.mode == "if":
        runs = try_if(bundle, manifest, golden, args)
    else:
        ensure_engine(bundle, args.mode, args)
        run = check_engine(bundle, manifest, golden, args)
        runs = {run["mode"]: run}
        write_result(bundle, runs)
    print("wrote %s" % os.path.join(bundle, RESULT))
    bad = ["%s mode level %d" % (m, r["level"]) for m, run in sorted(runs.items()) for r in run["levels"]
           if not r["ok"]]
    if bad:
        raise TensorRTError("%s differ%s from golden.npz beyond tolerance; rebuild with %s --precision fp32 to "
                            "tell fp16 error from a wrong engine" % (", ".join(bad), "s" if len(bad) == 1 else "",
                                                                    build_hint(bundle)))
    print("outputs: every level matches golden.npz")
    return 0


def add_arguments(p):
    p.description = __doc__.split("\n\n")[0].split(": ", 1)[1]
    p.epilog, p.formatter_class = __doc__.split("\n\n", 1)[1], argparse.RawDescriptionHelpFormatter
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="per-group: test (building if needed) the per-group engines; if: try the single If "
                        "engine against them and keep it only if faster (default: the engine there, else "
                        "per-group)")
    p.add_argument("--precision", choices=builder.PRECISIONS, default=None,
                   help="rebuild at this precision if the engine differs (default: what is there)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the engine even if one is there")
    p.add_argument("--workspace-mb", type=int, default=256, metavar="N", help="builder workspace (default 256)")
    p.add_argument("--warmup", type=int, default=20, metavar="N", help="untimed calls per measurement (default 20)")
    p.add_argument("--runs", type=int, default=200, metavar="N", help="timed calls per measurement (default 200)")
    p.add_argument("--flat-ratio", type=float, default=1.2, metavar="R",
                   help="call the ladder flat if latency(level G) / latency(level 1) < R at batch 1 (default 1.2)")
