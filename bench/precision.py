"""The benchmark's int8 section (issue 13): float32 against int8 levels of one file, timed in one run.

A bundle carrying both precisions and one carrying int8 alone are built from the checkpoint into the work
folder (cached by the checkpoint's sha256; int8 needs --data for its calibration images). Measured: each
level's latency at both precisions, interleaved (1 thread, the run's batch sizes), the int8 ladder against
the MAC ratio, the int8-only file against the float32-only bundle file, and each level's test accuracy at
both precisions (the bundle's build measured int8 through the int8 engine on the whole test split). This
host's CPU decides nothing: the boards' profiles say whether int8 is faster there (docs/int8.md).
"""
import os

import numpy as np

GOALS = {"accuracy_drop_points": 1.0, "file_ratio": 0.30, "ladder_vs_macs": 0.9, "rss_ratio": 1.10}
MEMORY_REPEATS = 3


def _built(path, sha):
    from runtime.bundle import read_manifest
    try:
        return read_manifest(path)["model"]["checkpoint"]["sha256"] == sha
    except Exception:  # noqa: BLE001 - absent or unreadable: build it again
        return False


def _bundles(ckpt_path, sha, data_dir, target, work, log):
    from compile.bundle import build_bundle
    out = {}
    for precision in ("both", "int8"):
        d = os.path.join(work, "int8-%s-%s" % (precision, sha[:12]))
        if not _built(d, sha):
            log("  building a %s bundle into %s (calibration and int8 accuracy on %s)" % (precision, d, data_dir))
            build_bundle(ckpt_path, target, d, data_dir, log=lambda *a: None, precision=precision)
        out[precision] = d
    return out


def _full_int8_file(ckpt_path, sha, data_dir, batches, work, man, log):
    """The top level alone as one int8 network (its groups and their combination in one graph, quantized by the
    same PT2E flow and calibration images): what an app that runs only the full model would load."""
    from compile.checkpoint import load_checkpoint
    from compile.fold_bn import DeployLevel, deploy_paths
    path = os.path.join(work, "refs", sha[:16], "full-int8.tflite")
    if os.path.isfile(path):
        return path
    from bench.engines import combiners
    from compile.data import Normalizer
    from compile.emit_tflite import convert_modules
    from compile.quantize import calibration_images, quantize_path, quantizer
    model, meta = load_checkpoint(ckpt_path)
    G = model.num_groups
    level = DeployLevel(deploy_paths(model), combiners(man)[G - 1]).eval()  # combined as the bundle states
    size, chans = int(meta["input"]["size"]), int(meta["input"]["channels"])
    calib_u8, _ = calibration_images(data_dir, size, chans)
    calib = Normalizer(meta["input"]["mean"], meta["input"]["std"])(calib_u8)
    qz = quantizer()
    named = [("level%d_b%d" % (G, b), quantize_path(level, b, calib, qz), b) for b in batches]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log("  converting the full level alone to int8 (the RSS reference) into %s" % path)
    convert_modules(named, lambda b: (b, chans, size, size), path + ".tmp", qz)
    os.replace(path + ".tmp", path)
    return path


def _int8_memory(int8_bundle, full_file, G, shape, batches, log):
    """RSS growth (fresh process each, MEMORY_REPEATS alternating runs) of the int8-only bundle with every level
    run once against the full int8 level alone."""
    from bench.memory import _files_spec, rss_in_fresh_process
    from bench.stats import ratio, summarize
    specs = {"engine": {"kind": "engine", "bundle": int8_bundle, "threads": 1, "batches": batches,
                        "input_shape": list(shape)},
             "full": _files_spec([(full_file, ["level%d" % G])], batches, 1, list(shape))}
    deltas = {k: [] for k in specs}
    for rep in range(MEMORY_REPEATS):
        for kind in (("engine", "full") if rep % 2 == 0 else ("full", "engine")):
            deltas[kind].append(rss_in_fresh_process(specs[kind])["delta"])
    rss = {k: summarize(v) for k, v in deltas.items()}
    out = {"rss_bytes": rss, "rss_ratio": ratio(rss["engine"]["median"], rss["full"]["median"]),
           "repeats": MEMORY_REPEATS, "batches": batches}
    log("  int8 memory: every int8 level ready %.1f MB, full int8 level alone %.1f MB (%.2fx; RSS growth, median of %d)"
        % (rss["engine"]["median"] / 1e6, rss["full"]["median"] / 1e6, out["rss_ratio"] or 0, MEMORY_REPEATS))
    return out


def measure_precision(ckpt_path, sha, data_dir, target, fp32_file, macs, batches, mode, work, log):
    from bench.latency import ladder_config
    from bench.stats import paired_ratios, ratio
    from runtime import load
    from runtime.bundle import read_manifest
    if not data_dir:
        return {"skipped": "int8 levels are calibrated on training images: pass --data"}
    paths = _bundles(ckpt_path, sha, data_dir, target, work, log)
    man = read_manifest(paths["both"])
    q8_file = os.path.join(paths["int8"], read_manifest(paths["int8"])["engines"]["tflite"]["file"])
    sizes = {"fp32": os.path.getsize(fp32_file), "int8": os.path.getsize(q8_file),
             "both": os.path.getsize(os.path.join(paths["both"], man["engines"]["tflite"]["file"]))}
    levels = [lv["level"] for lv in man["levels"]]
    ort8 = (man["engines"]["onnx"].get("int8") or {}).get("test_accuracy") or [None] * len(man["levels"])
    acc = [{"level": lv["level"], "fp32": lv.get("test_accuracy"), "int8": lv.get("test_accuracy_int8"),
            "onnx_int8": a8} for lv, a8 in zip(man["levels"], ort8)]
    for a in acc:
        a["drop_points"] = None if a["int8"] is None else round(100 * (a["fp32"] - a["int8"]), 3)
    m = load(paths["both"], backend="tflite", threads=1)
    be = m.backend
    be.prepare(levels, batches)
    # the onnxruntime peer: the same bundle's model.onnx and model_int8.onnx, one session each (one thread)
    ort = {p: load(paths["both"], backend="onnx", threads=1) for p in ("fp32", "int8")} \
        if "int8" in man["engines"]["onnx"].get("precisions", []) else {}
    for p, om in ort.items():
        om.set_operating_point(precision=p)
    rows = {}
    try:
        for b in batches:
            x = np.random.default_rng(b).standard_normal((b,) + tuple(m.input_shape)).astype(np.float32)

            def fn(k, p):
                return lambda x: be.combiner(be.contributions(x, range(1, k + 1), precision=p), k)
            runners = {p: {k: fn(k, p) for k in levels} for p in ("fp32", "int8")}
            for p, om in ort.items():
                runners["ort_" + p] = {k: (lambda x, k=k, om=om: om.infer(x, k)) for k in levels}
            cfg = ladder_config(runners, levels, x, mode["rounds"], mode["target_s"], mode["warmup"])
            per = []
            for k in levels:
                r = paired_ratios(cfg["samples"][("int8", k)], cfg["samples"][("fp32", k)])
                per.append({"level": k, "fp32": cfg["impls"]["fp32"][k], "int8": cfg["impls"]["int8"][k],
                            "int8_vs_fp32": r})
                if ort:
                    per[-1].update(ort_fp32=cfg["impls"]["ort_fp32"][k], ort_int8=cfg["impls"]["ort_int8"][k],
                                   ort_int8_vs_tflite_int8=paired_ratios(cfg["samples"][("ort_int8", k)],
                                                                         cfg["samples"][("int8", k)]),
                                   ort_int8_vs_ort_fp32=paired_ratios(cfg["samples"][("ort_int8", k)],
                                                                      cfg["samples"][("ort_fp32", k)]))
            q1, qg = per[0]["int8"]["median"], per[-1]["int8"]["median"]
            ideal = ratio(macs[-1], macs[0])
            rows[str(b)] = {"levels": per, "int8_range": ratio(qg, q1), "ideal_range": ideal,
                            "int8_range_vs_ideal": ratio(ratio(qg, q1), ideal)}
            log("  int8 batch %-2d: %s ms (fp32 %s); int8/fp32 %s; int8 range %.2fx (MACs %.2fx)" % (
                b, " / ".join("%.3f" % (r["int8"]["median"] * 1e3) for r in per),
                " / ".join("%.3f" % (r["fp32"]["median"] * 1e3) for r in per),
                " ".join("%.2f" % r["int8_vs_fp32"]["median"] for r in per), rows[str(b)]["int8_range"], ideal))
            if ort:
                log("  onnxruntime batch %-2d: int8 %s ms (fp32 %s); onnxruntime int8 / TFLite int8 %s" % (
                    b, " / ".join("%.3f" % (r["ort_int8"]["median"] * 1e3) for r in per),
                    " / ".join("%.3f" % (r["ort_fp32"]["median"] * 1e3) for r in per),
                    " ".join("%.2f" % r["ort_int8_vs_tflite_int8"]["median"] for r in per)))
    finally:
        m.close()
        for om in ort.values():
            om.close()
    full8 = _full_int8_file(ckpt_path, sha, data_dir, batches, work, man, log)
    memory = _int8_memory(paths["int8"], full8, levels[-1], m.input_shape, batches, log)
    return {"bundles": paths, "file_bytes": sizes, "cpu_int8_flags": _int8_flags(), "file_ratio": sizes["int8"] / float(sizes["fp32"]),
            "accuracy": acc, "batches": rows, "calibration": man["engines"]["tflite"].get("calibration"),
            "threads": 1, "memory": memory, "not_measured": []}


def _int8_flags():
    """The CPU's integer dot-product extensions (x86 VNNI, ARM dotprod), from /proc/cpuinfo where it exists."""
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        return []
    return sorted(words & {"avx512_vnni", "avx_vnni", "asimddp"})


def checks(q):
    if not q or "skipped" in q:
        return []
    out = []
    drops = [a["drop_points"] for a in q["accuracy"] if a["drop_points"] is not None]
    if drops:
        out.append({"name": "int8: every level within %g point of its float32 accuracy" % GOALS["accuracy_drop_points"],
                    "value": max(drops), "limit": GOALS["accuracy_drop_points"],
                    "ok": max(drops) <= GOALS["accuracy_drop_points"]})
    out.append({"name": "int8 file <= %.2fx the float32 file" % GOALS["file_ratio"], "value": q["file_ratio"],
                "limit": GOALS["file_ratio"], "ok": q["file_ratio"] <= GOALS["file_ratio"]})
    mem = q.get("memory")
    if mem and mem.get("rss_ratio") is not None:
        out.append({"name": "int8: RSS with every int8 level ready <= %.2fx the full int8 level alone" % GOALS["rss_ratio"],
                    "value": mem["rss_ratio"], "limit": GOALS["rss_ratio"], "ok": mem["rss_ratio"] <= GOALS["rss_ratio"]})
    for b, r in sorted(q["batches"].items()):
        v = r["int8_range_vs_ideal"]
        out.append({"name": "int8 latency ladder at batch %s >= %.1f of the MAC ratio" % (b, GOALS["ladder_vs_macs"]),
                    "value": v, "limit": GOALS["ladder_vs_macs"],
                    "ok": None if v is None else v >= GOALS["ladder_vs_macs"]})
    return out


def report_section(res):
    from bench.report import DASH, _pct, _ratio, _spread, _table
    q = res.get("precision")
    head = ["## Integer levels (issue 13)", ""]
    if not q:
        return []
    if "skipped" in q:
        return head + ["Not measured: %s." % q["skipped"], ""]
    lines = head + [
        "One file with float32 and int8 signatures (`--precision both`), built from the checkpoint; one thread, "
        "timed interleaved; ms, median (p10-p90). int8 speed depends on the CPU's integer dot-product "
        "instructions (this one: %s); it says nothing about ARM boards, whose own profiles decide "
        "(`python -m runtime profile`)." % (", ".join(q.get("cpu_int8_flags") or []) or "none of avx512_vnni, "
                                            "avx_vnni, asimddp"), ""]
    rows = []
    for b, r in sorted(q["batches"].items(), key=lambda kv: int(kv[0])):
        for lv in r["levels"]:
            rows.append((b, lv["level"], _spread(lv["fp32"]), _spread(lv["int8"]), _ratio(lv["int8_vs_fp32"])))
    lines += _table(("batch", "level", "float32", "int8", "int8 / float32"), rows) + [""]
    orows = [(b, lv["level"], _spread(lv["ort_fp32"]), _spread(lv["ort_int8"]), _ratio(lv["ort_int8_vs_ort_fp32"]),
              _ratio(lv["ort_int8_vs_tflite_int8"]))
             for b, r in sorted(q["batches"].items(), key=lambda kv: int(kv[0])) for lv in r["levels"] if "ort_int8" in lv]
    if orows:
        lines += ["The onnxruntime peer in the same run: the bundle's model.onnx and model_int8.onnx (each group "
                  "quantized by onnxruntime's quantize_static, QDQ, same calibration images), one thread:", ""]
        lines += _table(("batch", "level", "ORT float32", "ORT int8", "ORT int8 / ORT float32",
                         "ORT int8 / TFLite int8"), orows) + [""]
    lines += ["int8 ladder (L%d / L1) against the MAC ratio: %s." % (
        len(q["accuracy"]), ", ".join("batch %s %.2fx of %.2fx" % (b, r["int8_range"] or 0, r["ideal_range"] or 0)
                                      for b, r in sorted(q["batches"].items(), key=lambda kv: int(kv[0])))), ""]
    lines += ["Files: float32 only %.2f MB, int8 only %.2f MB (%.2fx), both %.2f MB." % (
        q["file_bytes"]["fp32"] / 1e6, q["file_bytes"]["int8"] / 1e6, q["file_ratio"], q["file_bytes"]["both"] / 1e6),
        ""]
    arows = [(a["level"], _pct(a["fp32"]), _pct(a["int8"]), DASH if a["drop_points"] is None else
              "%.2f" % a["drop_points"], _pct(a.get("onnx_int8"))) for a in q["accuracy"]]
    cal = q.get("calibration") or {}
    lines += ["CIFAR-10 test accuracy (float32: the checkpoint's; int8: through the int8 engine at build time, "
              "calibrated on %s %s images, seed %s):" % (cal.get("images"), cal.get("split"), cal.get("seed")), ""]
    lines += _table(("level", "float32", "int8 (TFLite)", "drop (points)", "int8 (onnxruntime QDQ)"), arows) + [""]
    mem = q.get("memory")
    if mem:
        lines += ["Memory (RSS growth in a fresh process, median of %d, batches %s): every level of the int8-only "
                  "bundle ready %.1f MB, the full level alone as one int8 network %.1f MB: **%.2fx**." % (
                      mem["repeats"], "/".join(map(str, mem["batches"])), mem["rss_bytes"]["engine"]["median"] / 1e6,
                      mem["rss_bytes"]["full"]["median"] / 1e6, mem["rss_ratio"] or 0), ""]
    if q.get("not_measured"):
        lines += ["Not measured yet: %s." % "; ".join(q["not_measured"]), ""]
    return lines
