#!/usr/bin/env python3
"""Check a nano-gpu bundle's TensorRT engine on the board: outputs against golden.npz, latency per level.

  python3 board_scripts/trt_selftest.py BUNDLE [--mode if|per-group] [--rebuild] [--runs N]

Builds the engine first (board_scripts/trt_build.py) when BUNDLE has none, when --mode/--precision differ
from the engine there, or with --rebuild. Then, for every level: compares the logits with golden.npz
(tolerance golden.atol_fp16 for fp16 engines, golden.atol for fp32, plus golden.rtol), and measures the median
latency of run_level at batch 1 and at the engine's largest batch. It says whether the level ladder is flat
(level G barely slower than level 1: the engine does not skip the groups above the requested level), and
then what to do. Results go to BUNDLE/trt_selftest.json, one entry per mode, so running it once per mode
compares the two (latency and engine size). Exit 1 on a mismatch or an expected failure.
Runs with the runtime only (Python 3.6, TensorRT, pycuda or cuda-python, numpy).
"""
import argparse
import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The repository root first (runtime/); this folder last, so board_scripts/profile.py can never
# shadow the standard library's `profile` module.
sys.path[:] = [os.path.dirname(HERE)] + [p for p in sys.path if os.path.abspath(p or ".") != HERE] + [HERE]

import numpy as np  # noqa: E402

import trt_build  # noqa: E402
from runtime.trt.backend import RECORD, TensorRTBackend  # noqa: E402
from runtime.bundle import load_golden, read_manifest, verify_files  # noqa: E402
from runtime.errors import RuntimeUserError  # noqa: E402

RESULT = "trt_selftest.json"
RESULT_SCHEMA, RESULT_SCHEMA_VERSION = "dynn-trt-selftest", 1


class SelftestError(Exception):
    """Expected failure: printed as one line, exit 1."""


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ensure_engine(bundle, args):
    """Build when there is no engine, when the wanted mode/precision differs, or on --rebuild."""
    record = read_json(os.path.join(bundle, RECORD))
    reason = None
    if record is None:
        reason = "no engine yet"
    elif args.rebuild:
        reason = "--rebuild"
    elif args.mode and args.mode != record.get("mode"):
        reason = "engine is %s mode, --mode %s asked" % (record.get("mode"), args.mode)
    elif args.precision and args.precision != record.get("precision"):
        reason = "engine is %s, --precision %s asked" % (record.get("precision"), args.precision)
    if reason is None:
        return False
    mode = args.mode or (record or {}).get("mode") or "if"
    print("building the TensorRT engine (%s): %s mode" % (reason, mode))
    try:
        trt_build.build(bundle, mode, args.precision, args.workspace_mb)
    except trt_build.ParseError as e:
        for line in e.lines:
            print("%s: %s" % (e.source, line), file=sys.stderr)
        raise SelftestError(str(e))
    except trt_build.BuildError as e:
        raise SelftestError(str(e))
    return True


def timings(fn, warmup, runs):
    """(median ms, p90 ms) of fn() over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        t[i] = time.perf_counter() - t0
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
        got = backend.run_level(x, level)
        got1 = backend.run_level(x[:1], level)
        diff = max(float(np.max(np.abs(got - ref))), float(np.max(np.abs(got1 - ref[:1]))))
        ok = bool(np.all(np.abs(got - ref) <= atol + rtol * np.abs(ref))
                  and np.all(np.abs(got1 - ref[:1]) <= atol + rtol * np.abs(ref[:1])))
        rows.append({"level": level, "max_abs_diff": diff, "atol": atol, "rtol": rtol, "ok": ok,
                     "top1_agree": float(np.mean(got.argmax(1) == ref.argmax(1))), "n": int(len(x))})
    return rows


def measure(backend, x, warmup, runs):
    """{level: {batch: (median ms, p90 ms)}} at batch 1 and at max_batch."""
    batches = sorted({1, backend.max_batch})
    big = np.ascontiguousarray(np.resize(x, (backend.max_batch,) + x.shape[1:]), dtype=np.float32)
    out = {}
    for level in range(1, backend.groups + 1):
        out[level] = {}
        for b in batches:
            xb = big[:b]
            out[level][b] = timings(lambda: backend.run_level(xb, level), warmup, runs)
    return out


def ladder_verdict(record, lat, groups, flat_ratio, bundle):
    ratio = lat[groups][1][0] / lat[1][1][0]
    flat = ratio < flat_ratio
    if not flat:
        advice = "the ladder is real: lower levels are faster"
    elif record["mode"] == "if":
        advice = ("ladder is flat: rebuild with --mode per-group (python3 board_scripts/trt_build.py %s "
                  "--mode per-group) and run this selftest again" % bundle)
    else:
        advice = ("ladder is flat even with one engine per group: at this size the GPU time is launch/copy "
                  "bound, so levels save little latency on this board")
    return ratio, flat, advice


def mb(nbytes):
    return "%.2f MB" % (nbytes / 1e6)


def print_report(record, backend, rows, lat, macs, ratio, flat, advice, flat_ratio, engine_bytes, onnx_bytes):
    print("TensorRT %s on %s: %s mode, %s, engines %s (%s; their ONNX: %s)" % (
        record["tensorrt_version"], record.get("gpu") or "unknown GPU", record["mode"], record["precision"],
        ", ".join(record["engines"]), mb(engine_bytes), mb(onnx_bytes)))
    bmax = backend.max_batch
    head = "%-5s %10s %7s %5s %7s %10s %8s" % ("level", "max|diff|", "tol", "ok", "top1=", "b1 ms", "b1 p90")
    if bmax > 1:
        head += " %11s %10s" % ("b%d ms" % bmax, "img/s")
    head += " %9s %9s" % ("vs lvl 1", "MACs x")
    print(head)
    base = lat[1][1][0]
    for r in rows:
        k = r["level"]
        line = "%-5d %10.2e %7.0e %5s %6.1f%% %10.3f %8.3f" % (
            k, r["max_abs_diff"], r["atol"], "yes" if r["ok"] else "NO", 100 * r["top1_agree"],
            lat[k][1][0], lat[k][1][1])
        if bmax > 1:
            line += " %11.3f %10.0f" % (lat[k][bmax][0], 1e3 * bmax / lat[k][bmax][0])
        line += " %9.2f %9s" % (lat[k][1][0] / base,
                                "%.2f" % (macs[k] / macs[1]) if macs.get(k) and macs.get(1) else "-")
        print(line)
    print("ladder: level %d / level 1 = %.2f at batch 1 (flat below %.2f): %s"
          % (len(rows), ratio, flat_ratio, advice))


def print_comparison(runs):
    """Both modes measured with the same TensorRT and GPU: engine size and batch-1 latency side by side."""
    a, b = runs.get("if"), runs.get("per-group")
    if not a or not b or (a["tensorrt_version"], a["gpu"]) != (b["tensorrt_version"], b["gpu"]):
        return
    print("modes compared (from %s):" % RESULT)
    print("  %-10s %12s  %s" % ("mode", "engines", "batch-1 median ms per level"))
    for mode, r in (("if", a), ("per-group", b)):
        print("  %-10s %12s  %s" % (mode, mb(r["engine_bytes"]),
                                    " ".join("%.3f" % r["latency_ms"][str(k)]["1"][0]
                                             for k in sorted(int(k) for k in r["latency_ms"]))))
    print("  per-group engines vs the single engine: %+.2f MB" % ((b["engine_bytes"] - a["engine_bytes"]) / 1e6))


def write_result(bundle, run):
    path = os.path.join(bundle, RESULT)
    old = read_json(path) or {}
    runs = old.get("runs", {}) if old.get("schema") == RESULT_SCHEMA else {}
    runs[run["mode"]] = run
    doc = {"schema": RESULT_SCHEMA, "schema_version": RESULT_SCHEMA_VERSION, "runs": runs}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return runs


def selftest(args):
    bundle = args.bundle
    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)  # golden.npz and the ONNX files included
    golden = load_golden(bundle, manifest)
    ensure_engine(bundle, args)

    backend = TensorRTBackend(bundle, manifest)
    try:
        record = backend.record
        rows = check_levels(backend, manifest, golden)
        lat = measure(backend, golden["input"], args.warmup, args.runs)
        max_batch = backend.max_batch
    finally:
        backend.close()

    groups = len(rows)
    ratio, flat, advice = ladder_verdict(record, lat, groups, args.flat_ratio, bundle)
    macs = {int(lv["level"]): lv.get("macs") for lv in manifest.get("levels", [])}
    engine_bytes = sum(f["size"] for f in record["files"].values())
    onnx_bytes = sum(manifest["files"][rel]["size"] for rel in record.get("sources", {})
                     if rel in manifest.get("files", {}))
    print_report(record, backend, rows, lat, macs, ratio, flat, advice, args.flat_ratio, engine_bytes, onnx_bytes)

    mismatched = [r["level"] for r in rows if not r["ok"]]
    run = {
        "mode": record["mode"], "precision": record["precision"], "tensorrt_version": record["tensorrt_version"],
        "gpu": record.get("gpu"), "engine_built": record.get("built"), "engine_files": record["files"],
        "engine_bytes": engine_bytes, "onnx_bytes": onnx_bytes, "batch_max": max_batch,
        "levels": rows, "outputs_ok": not mismatched,
        "latency_ms": {str(k): {str(b): list(v) for b, v in per.items()} for k, per in lat.items()},
        "warmup": args.warmup, "runs": args.runs,
        "ladder_ratio": ratio, "flat_ratio": args.flat_ratio, "ladder_flat": flat, "advice": advice,
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    runs = write_result(bundle, run)
    print_comparison(runs)
    print("wrote %s" % os.path.join(bundle, RESULT))
    if mismatched:
        what = ("levels %s differ" if len(mismatched) > 1 else "level %s differs") % ", ".join(map(str, mismatched))
        raise SelftestError("%s from golden.npz beyond tolerance" % what)
    print("outputs: all %d levels match golden.npz" % groups)


def build_parser():
    p = argparse.ArgumentParser(prog="trt_selftest.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--mode", choices=trt_build.MODES, default=None,
                   help="engine layout to test; rebuilds if the bundle's engine differs (default: what is there, "
                        "else if)")
    p.add_argument("--precision", choices=trt_build.PRECISIONS, default=None,
                   help="rebuild at this precision if the engine differs (default: what is there)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the engine even if one is there")
    p.add_argument("--workspace-mb", type=int, default=256, metavar="N", help="builder workspace (default 256)")
    p.add_argument("--warmup", type=int, default=20, metavar="N", help="untimed calls per measurement (default 20)")
    p.add_argument("--runs", type=int, default=200, metavar="N", help="timed calls per measurement (default 200)")
    p.add_argument("--flat-ratio", type=float, default=1.2, metavar="R",
                   help="call the ladder flat if latency(level G) / latency(level 1) < R at batch 1 (default 1.2)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        print("error: --runs must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 1
    try:
        selftest(args)
    except (SelftestError, RuntimeUserError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
