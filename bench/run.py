"""Orchestration of `python build.py bench`: prepare the engines, measure each section, write the results."""
import os
import shlex
import shutil
import time

import numpy as np

from compile.errors import UserError
from runtime.cli import utc_now

# quick: the CI smoke mode (about 2 minutes on 2 busy cores); full: the published numbers.
MODES = {
    "quick": dict(batches=(1,), rounds=9, target_s=0.015, warmup=2, switch_rounds=3, switches=500,
                  memory_repeats=1, peak_n=1024, peak_repeats=10, accuracy_images=500, decision_calls=5000),
    "full": dict(batches=(1, 32), rounds=25, target_s=0.04, warmup=5, switch_rounds=10, switches=5000,
                 memory_repeats=3, peak_n=2048, peak_repeats=10, accuracy_images=None, decision_calls=20000),
}
IMPLS = ("engine", "bare", "single", "onnxruntime", "pytorch", "dense")
BENCH_FILES = ("bench.json", "report.md")


def _rel(path):
    if path is None:
        return None
    rel = os.path.relpath(os.path.abspath(path))
    return path if rel.startswith("..") else rel


def command_line(args):
    """The exact command, rebuilt from the parsed options (only those that differ from the defaults)."""
    import argparse
    from bench import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    defaults = vars(p.parse_args([]))
    parts = ["python", "build.py", "bench"]
    for action in p._actions:  # noqa: SLF001 - reading our own parser
        if not action.option_strings or action.dest == "help":
            continue
        v = getattr(args, action.dest, defaults.get(action.dest))
        if v == defaults.get(action.dest):
            continue
        flag = action.option_strings[0]
        parts += [flag] if v is True else [flag, str(v)]
    return " ".join(shlex.quote(x) for x in parts)


def _threads(spec, cores):
    if spec:
        try:
            ts = [int(t) for t in str(spec).split(",") if t.strip()]
        except ValueError:
            raise UserError("--threads takes comma-separated integers, e.g. 1,2; got %r" % spec)
        if not ts or min(ts) < 1:
            raise UserError("--threads needs positive thread counts, got %r" % spec)
        return sorted(set(ts))
    return sorted({1, cores})


def _bundle(args, target, ckpt_path, meta, work, log):
    """The bundle to measure: --bundle, else artifacts/<target> if built from this checkpoint, else build one."""
    from compile.bundle import build_bundle
    from runtime.bundle import read_manifest
    sha = meta["tensors"]["sha256"]

    def built_from_ckpt(d):
        try:
            return read_manifest(d)["model"]["checkpoint"]["sha256"] == sha
        except Exception:  # noqa: BLE001 - any unreadable bundle is simply not a match
            return False

    if args.bundle:
        if not built_from_ckpt(args.bundle):
            raise UserError("bundle %s was not built from %s (checkpoint sha256 differs or no manifest); build it "
                            "with: python build.py --target %s --checkpoint %s --out %s"
                            % (args.bundle, ckpt_path, target["name"], ckpt_path, args.bundle))
        return args.bundle
    shipped = os.path.join("artifacts", target["name"])
    if built_from_ckpt(shipped):
        return shipped
    d = os.path.join(work, "bundle-%s-%s" % (target["name"], sha[:16]))
    if not built_from_ckpt(d):
        log("  building a %s bundle from %s into %s" % (target["name"], ckpt_path, _rel(d)))
        from bench.refs import quiet_fds
        with quiet_fds():
            build_bundle(ckpt_path, target["name"], d, log=lambda *a: None)
    return d


def _levels_table(cfg, levels, macs):
    """Per-level numbers of one (threads, batch) configuration, with ratios taken per round."""
    from bench.latency import paired_ratio
    from bench.stats import ideal_latencies, median_of
    impls = cfg["impls"]
    eng = [median_of(impls["engine"].get(k)) for k in levels]
    ideal = ideal_latencies(eng[0], macs)
    rows = []
    for i, k in enumerate(levels):
        row = {"level": k, "macs": macs[i], "ideal_s": ideal[i]}
        for impl in IMPLS:
            row[impl] = impls.get(impl, {}).get(k)
        row["engine_vs_single"] = paired_ratio(cfg, "engine", "single", k)
        row["engine_vs_bare"] = paired_ratio(cfg, "engine", "bare", k)
        for peer in ("onnxruntime", "pytorch", "dense"):
            row["%s_vs_engine" % peer] = paired_ratio(cfg, peer, "engine", k)
        rows.append(row)
    return rows


def _agreement(runners, x):
    """Largest difference of every implementation's output from the engine's, per level: the things timed
    compute the same function."""
    out = {}
    for impl, fns in runners.items():
        if impl in ("engine", "dense"):
            continue
        out[impl] = max(float(np.max(np.abs(np.asarray(fns[k](x)) - runners["engine"][k](x)))) for k in fns)
    return out


def measure_latency(bundle, paths, combiners, single, dense, levels, macs, in_shape, threads_list, batches, mode,
                    log):
    import runtime
    from bench import engines
    from bench.latency import ladder_config
    from bench.stats import ratio
    configs, agreement = [], {}
    for t in threads_list:
        eng = runtime.load(bundle, backend="tflite", threads=t)
        eng.backend.prepare(levels, batches)
        ort = runtime.load(bundle, backend="onnx", threads=t)
        torch_fns = engines.torch_levels(paths, combiners, t)
        single_it = {k: engines.open_interpreter(single[k], t) for k in levels}
        dense_it = engines.open_interpreter(dense[0], t) if dense else None
        for b in batches:
            x = np.random.default_rng(b).standard_normal((b,) + tuple(in_shape)).astype(np.float32)
            runners = {
                "engine": {k: engines.engine_level(eng, k) for k in levels},
                "bare": {k: engines.bare_level(eng.backend.interp, k, b, eng.manifest) for k in levels},
                "single": {k: engines.Signature(single_it[k], "level%d_b%d" % (k, b)) for k in levels},
                "onnxruntime": {k: engines.engine_level(ort, k) for k in levels},
                "pytorch": torch_fns,
            }
            if dense_it is not None:
                runners["dense"] = {k: engines.Signature(dense_it, "level%d_b%d" % (k, b)) for k in dense[1]}
            agreement["t%d_b%d" % (t, b)] = _agreement(runners, x)
            cfg = ladder_config(runners, levels, x, mode["rounds"], mode["target_s"], mode["warmup"])
            rows = _levels_table(cfg, levels, macs)
            e1, eg = rows[0]["engine"]["median"], rows[-1]["engine"]["median"]
            ideal = ratio(macs[-1], macs[0])
            conf = {"threads": t, "batch": b, "rounds": mode["rounds"], "levels": rows,
                    "calls_per_sample": {"%s/L%d" % key: n for key, n in cfg["calls_per_sample"].items()},
                    "dynamic_range": ratio(eg, e1), "ideal_range": ideal,
                    "range_vs_ideal": ratio(ratio(eg, e1), ideal)}
            dyn = [r["engine_vs_single"]["median"] for r in rows if r["engine_vs_single"]]
            conf["dynamic_cost_max"] = max(dyn) if dyn else None
            conf["dynamic_cost_mean"] = sum(dyn) / len(dyn) if dyn else None
            configs.append(conf)
            log("  latency %d thread(s), batch %-2d: %s ms; range L%d/L1 %.2fx (MACs %.2fx); engine/single %s"
                % (t, b, " / ".join("%.3f" % (r["engine"]["median"] * 1e3) for r in rows), levels[-1],
                   conf["dynamic_range"], ideal, " ".join("%.2f" % d for d in dyn)))
        eng.close()
        ort.close()
    return configs, agreement


def measure_peaks(threads_list, configs, full_macs, mode, work, log):
    """The GEMM peak per thread count, and the fraction of it the full level reaches at each batch size."""
    from bench.peak import fc_file, measure_peak
    log("peak: float32 GEMM %dx%d, torch.mm and XNNPACK's FULLY_CONNECTED" % (mode["peak_n"], mode["peak_n"]))
    fc = fc_file(mode["peak_n"], work, log)
    peaks = []
    for t in threads_list:
        pk = measure_peak(t, mode["peak_n"], mode["peak_repeats"], fc)
        pk["achieved"] = []
        for c in configs:
            if c["threads"] == t:
                achieved = full_macs * c["batch"] / c["levels"][-1]["engine"]["median"]
                pk["achieved"].append({"batch": c["batch"], "level": c["levels"][-1]["level"],
                                       "macs_per_s": achieved, "fraction": achieved / pk["peak_macs_per_s"]})
        peaks.append(pk)
        log("  %d thread(s): peak %.1f GMAC/s; full level reaches %s" % (
            t, pk["peak_macs_per_s"] / 1e9, ", ".join("%.1f%% at batch %d" % (100 * a["fraction"], a["batch"])
                                                      for a in pk["achieved"])))
    return peaks


def run_bench(args, log=print):
    t_start = time.time()
    from bench import accuracy as acc_mod
    from bench import machine, manager, memory, refs
    from bench.switching import measure_switching
    from compile.checkpoint import load_checkpoint, resolve
    from compile.fold_bn import deploy_paths
    from compile.targets import get_target
    import runtime
    from runtime.bundle import read_manifest, verify_files

    from bench import parallel as par_mod
    split = par_mod.parse_split(getattr(args, "split", None))  # a bad --split: one line now, not after minutes
    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    target = get_target(args.target)
    if target["engine"] != "tflite":
        raise UserError("bench measures on this machine through TFLite; target %s uses %s (use --target host-cpu, "
                        "or a TFLite board target)" % (target["name"], target["engine"]))
    out = os.path.abspath(args.out or os.path.join("bench-out", target["name"]))
    work = os.path.abspath(args.work or os.path.join(out, "work"))
    try:
        os.makedirs(work, exist_ok=True)
    except OSError as exc:
        raise UserError("cannot write to %s (%s); choose another --out" % (work, exc.strerror))
    info = machine.describe()
    cores = info["cores_usable"]
    threads_list = _threads(args.threads, cores)
    log("bench (%s mode) on %s, %d usable cores, load average %s; output %s"
        % (mode_name, info["cpu"], cores, info["load_average_start"], _rel(out)))

    ckpt_path = resolve(args.checkpoint)
    model, meta = load_checkpoint(ckpt_path)
    paths = deploy_paths(model)
    G = int(meta["groups"])
    levels = list(range(1, G + 1))
    macs = [int(lv["macs"]) for lv in meta["levels"]]
    in_shape = (int(meta["input"]["channels"]), int(meta["input"]["size"]), int(meta["input"]["size"]))
    bundle = _bundle(args, target, ckpt_path, meta, work, log)
    man = read_manifest(bundle)
    verify_files(bundle, man)  # a tampered bundle: one line now, not after minutes of reference building
    from bench.engines import combiners as level_combiners
    combiners = level_combiners(man)
    have = man["engines"]["tflite"]["batch_sizes"]
    batches = [b for b in mode["batches"] if b in have]
    notes = ["batch %d skipped: the bundle carries batch sizes %s" % (b, have)
             for b in mode["batches"] if b not in have]

    log("preparing reference models (cached in %s)" % _rel(work))
    # The reference files carry the bundle's batch sizes, whatever this run times: XNNPACK packs the weights of
    # every signature of a file on its first call, so files compared for memory must hold the same signatures.
    single = refs.single_level_files(paths, combiners, meta["tensors"]["sha256"], in_shape, have, work, log)
    dense_path, dense_meta = refs.dense_file(args.dense, have, work, log)
    dense = (dense_path, [int(v["level"]) for v in dense_meta["levels"]]) if dense_path else None
    if not dense:
        log("  dense baseline: %s" % dense_meta)

    log("latency: %s rounds interleaved, threads %s, batch %s" % (mode["rounds"], threads_list, batches))
    configs, agreement = measure_latency(bundle, paths, combiners, single, dense, levels, macs, in_shape,
                                         threads_list, batches, mode, log)

    log("switching: set_level vs reloading a single-level model")
    eng = runtime.load(bundle, backend="tflite", threads=1)
    x1 = np.random.default_rng(1).standard_normal((1,) + in_shape).astype(np.float32)
    switching = measure_switching(eng, single, levels, x1, 1, mode["switch_rounds"], mode["switches"])
    log("  set_level %.2f us vs reload %.2f ms (%.0fx); to first result %.3f ms vs %.3f ms (%.0fx)"
        % (switching["set_level"]["median"] * 1e6, switching["reload_open"]["median"] * 1e3,
           switching["ratio_open_vs_set_level"], switching["set_level_then_infer"]["median"] * 1e3,
           switching["reload_first_result"]["median"] * 1e3, switching["ratio_first_result"]))

    log("memory: each set in a fresh process")
    mem = memory.measure_memory(os.path.abspath(bundle), os.path.join(bundle, man["engines"]["tflite"]["file"]),
                                in_shape, batches, single, dense, threads=1, repeats=mode["memory_repeats"], log=log)

    peaks = measure_peaks(threads_list, configs, macs[-1], mode, work, log)

    log("parallel: level %d split over two CPUs vs one core and two threads" % G)
    par = par_mod.measure_parallel(bundle, in_shape, macs[-1], peaks, batches, mode, log, split)

    from bench import precision as prec_mod
    log("int8: float32 against int8 levels of one file")
    precision = prec_mod.measure_precision(ckpt_path, meta["tensors"]["sha256"], args.data, target["name"],
                                           os.path.join(bundle, man["engines"]["tflite"]["file"]), macs, batches,
                                           mode, work, log)
    if "skipped" in precision:
        log("  %s" % precision["skipped"])
    log("accuracy")
    acc = acc_mod.records(ckpt_path, meta, args.dense, args.static_dir, G)
    if args.data:
        with runtime.load(bundle, backend="tflite", threads=max(threads_list)) as acc_eng:
            acc = acc_mod.remeasure(acc, args.data, acc_eng, (dense_path, dense_meta) if dense else None,
                                    max(batches), mode["accuracy_images"], work, log)
    mgr = manager.manager_section([bundle], args.demo,
                                  mode["decision_calls"])
    eng.close()

    result = {
        "schema": "dynn-bench", "schema_version": 1, "mode": mode_name,
        "command": command_line(args),
        "created": utc_now(),
        "machine": info,
        "target": target["name"], "bundle": _rel(bundle), "engine": "tflite (%s)" % eng.backend.binding,
        "checkpoint": {"file": _rel(ckpt_path), "sha256": meta["tensors"]["sha256"], "arch": meta["arch"],
                       "groups": G, "scheme": meta["scheme"]},
        "settings": dict(mode, batches=batches, threads=threads_list, bundle_batch_sizes=have,
                         omp_wait_policy=os.environ.get("OMP_WAIT_POLICY")),
        "levels": [{"level": int(lv["level"]), "macs": int(lv["macs"]), "params": int(lv["params"])}
                   for lv in meta["levels"]],
        "latency": configs, "agreement_max_abs": agreement, "switching": switching, "memory": mem,
        "peak": peaks, "parallel": par, "precision": precision, "accuracy": acc, "manager": mgr, "notes": notes,
        "references": {"single_level": {str(k): _rel(v) for k, v in single.items()},
                       "dense": _rel(dense_path) if dense else dense_meta},
    }
    result["checks"] = checks(result)
    result["machine"]["load_average_end"] = machine.load_average()
    result["seconds"] = round(time.time() - t_start, 1)
    write_outputs(result, out, args.publish, log)
    log("bench done in %.0f s: %s" % (result["seconds"], ", ".join(
        "%s %s" % (c["name"], "ok" if c["ok"] else ("FAILED" if c["ok"] is False else "n/a"))
        for c in result["checks"])))
    return 0


def checks(result):
    """The claims the report makes, each with its measured value and limit (a benchmark: reported, not fatal)."""
    out = []
    mem = result["memory"]
    out.append({"name": "memory: all levels within %.2fx of the full-width model alone" % mem["limit"],
                "value": mem["rss_ratio"].get("full"), "limit": mem["limit"], "ok": mem["within_limit"]})
    worst = [c["dynamic_cost_max"] for c in result["latency"] if c["dynamic_cost_max"] is not None]
    out.append({"name": "cost of being dynamic: engine / single-level <= 1.10 at every level",
                "value": max(worst) if worst else None, "limit": 1.10, "ok": (max(worst) <= 1.10) if worst else None})
    ag = [v for d in result["agreement_max_abs"].values() for k, v in d.items() if k in ("single", "onnxruntime")]
    out.append({"name": "single-level files and onnxruntime compute the engine's outputs (max abs diff <= 1e-3)",
                "value": max(ag) if ag else None, "limit": 1e-3, "ok": (max(ag) <= 1e-3) if ag else None})
    sw = result["switching"]["ratio_open_vs_set_level"]
    out.append({"name": "set_level at least 100x cheaper than reloading a model", "value": sw, "limit": 100,
                "ok": None if sw is None else sw >= 100})
    from bench.parallel import checks as parallel_checks
    from bench.precision import checks as precision_checks
    out.extend(parallel_checks(result.get("parallel")))
    out.extend(precision_checks(result.get("precision")))
    return out


def write_outputs(result, out, publish, log):
    from bench.plots import write_plots
    from bench.report import write_report
    from runtime.bundle import atomic_write_json
    os.makedirs(out, exist_ok=True)
    pngs = write_plots(result, out)
    result["plots"] = pngs
    atomic_write_json(os.path.join(out, "bench.json"), result)
    write_report(result, os.path.join(out, "report.md"))
    log("wrote %s: bench.json, report.md, %s" % (_rel(out), ", ".join(pngs)))
    if publish:
        from bench import PUBLISH_DIR
        os.makedirs(PUBLISH_DIR, exist_ok=True)
        for name in BENCH_FILES + tuple(pngs):
            shutil.copyfile(os.path.join(out, name), os.path.join(PUBLISH_DIR, name))
        log("published to %s" % PUBLISH_DIR)
