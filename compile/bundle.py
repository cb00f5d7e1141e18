"""Checkpoint -> bundle for one target, written atomically (docs/bundle.md is the contract).

The build happens in a hidden sibling directory; only when every engine is emitted and verified
against PyTorch does it replace the output directory in one rename. A failure leaves nothing behind
and an existing good bundle untouched.
"""
import json
import os
import shutil
import tempfile
import time

import numpy as np

import compile
from compile.checkpoint import atomic_write_bytes, load_checkpoint, resolve, sha256_file, umask_mode
from compile.validate import check_batch_sizes, check_replaceable
from compile.data import Normalizer
from compile.fold_bn import deploy_paths
from compile.errors import UserError
from compile.golden import golden_images, make_golden
from compile.quantize import INT8_TOLERANCE_STEPS, calibration_images, precisions_of
from runtime.backends.tflite_backend import signature_name
from compile.targets import get_target
from runtime.cli import module_versions, utc_now

SCHEMA = "dynn-bundle"
# 2: level_weights, group widths, MAC ratios and per-target ONNX opsets. A version-1 runtime would apply
# 1/k to a bundle with fitted weights and compute wrong logits, so it must refuse these bundles.
# 3: model.level_heads (group g outputs its contributions to levels g..G); written only by models with
# level heads, so a version-2 runtime still reads every other bundle and refuses these.
SCHEMA_VERSION = 2
SCHEMA_VERSION_HEADS = 3
GOLDEN_N = 8
ATOL = 1e-4


def _versions():
    from compile.train_record import code_version
    out = module_versions(["torch", "numpy", "litert_torch", "onnx", "onnxruntime", "ai_edge_litert"])
    out.update(dynn=compile.__version__, git=code_version()["git"])
    return out


def _prepare_out(out_dir):
    out_dir = os.path.abspath(out_dir)
    check_replaceable(out_dir)  # only an empty directory or one of our own bundles is ever replaced
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".building-", dir=parent)
        os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would make the bundle private after the rename
    except OSError as exc:
        raise UserError("cannot write the bundle under %s (%s); choose a writable --out" % (parent, exc.strerror))
    return out_dir, tmp


def _swap_in(tmp, out_dir):
    check_replaceable(out_dir)  # again: the build took a while and someone may have put files there
    old = None
    if os.path.isdir(out_dir):
        old = out_dir + ".old-%d" % os.getpid()
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        if old:
            os.rename(old, out_dir)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _check_onnx(path, golden, levels):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    for k in levels:
        got = sess.run(["logits"], {"input": golden["input"], "level": np.array([k], np.int32)})[0]
        _agree("ONNX (onnxruntime)", k, got, golden["level%d" % k])


def combiner_of(model):
    """The runtime's Combiner for this model, as a bundle's manifest will describe it: the uniform mean as sum
    times 1/k (the shipped engines' arithmetic), the level's weights (model.level_weights), or level heads."""
    from runtime.backends.base import Combiner
    G, uniform = model.num_groups, model.is_uniform()
    weights = [None if uniform else np.asarray(model.level_weights[k], np.float32) for k in range(G)]
    return Combiner(weights, [1.0 / k for k in range(1, G + 1)], model.has_heads(),
                    model.groups[0].head.out_features)


def combine_levels(contrib, k, combiner):
    """Level k from the groups' outputs [group 1, group 2, ...] as the runtime combines them."""
    return combiner(list(enumerate(contrib[:k], 1)), k)


def _check_tflite(path, golden, levels, signatures, combiner):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path, num_threads=1)
    x = golden["input"]
    by_group = {}
    for sig, info in signatures.items():
        if info["batch"] == 1 and info.get("precision", "fp32") == "fp32":
            by_group[info["group"]] = it.get_signature_runner(sig)
    contrib = []
    for g in sorted(by_group):
        runner = by_group[g]
        name = list(runner.get_input_details())[0]
        contrib.append(np.concatenate([list(runner(**{name: x[i:i + 1]}).values())[0] for i in range(len(x))]))
    for k in levels:
        _agree("TFLite (LiteRT)", k, combine_levels(contrib, k, combiner), golden["level%d" % k])


def _int8_group_outputs(path, signatures, G, batch, x, threads=1):
    """Dequantized logits of every group's int8 signature at `batch` for float inputs x [n, C, H, W], on the
    grids the manifest records (what the runtime uses), the last chunk padded with zeros."""
    from ai_edge_litert.interpreter import Interpreter
    from runtime.backends.base import run_batched
    from runtime.backends.tflite_backend import dequantize, quantize
    it = Interpreter(model_path=path, num_threads=threads)
    io, out = it.get_signature_list(), []
    for g in range(1, G + 1):
        name = signature_name(g, batch, "int8")
        rec, runner = signatures[name], it.get_signature_runner(name)
        iname, oname = io[name]["inputs"][0], io[name]["outputs"][0]

        def run(part, runner=runner, iname=iname, oname=oname, rec=rec):
            q = runner(**{iname: quantize(part, rec["input_quantization"])})[oname]
            return dequantize(q, rec["output_quantization"])
        out.append(run_batched(run, x, batch))
    return out


def int8_golden(path, golden, G, signatures, combiner, log):
    """The int8 signatures' own logits on the golden inputs (what a board must reproduce), each level's
    tolerance from its groups' output grids, and how far they are from float32 (a gross error is refused:
    broken quantization, not rounding)."""
    contrib = _int8_group_outputs(path, signatures, G, 1, golden["input"])
    steps = [float(signatures[signature_name(g, 1, "int8")]["output_quantization"][0]) for g in range(1, G + 1)]
    return _int8_record({k: combine_levels(contrib, k, combiner) for k in range(1, G + 1)}, steps, golden, combiner,
                        "int8_level{k}", "int8", log)


def _int8_record(outs, steps, golden, combiner, keys, what, log):
    """The golden record of an int8 engine's level logits `outs` ({level: [n, classes]}): per-level tolerance from
    its groups' output steps, the distance from float32, and a refusal of gross errors (broken quantization)."""
    arrays, atol, report = {}, [], []
    for k in sorted(outs):
        out = outs[k]
        w = [1.0] * k if combiner.heads else combiner.weights[k - 1]
        w = [combiner.scale[k - 1]] * k if w is None else w
        atol.append(float(INT8_TOLERANCE_STEPS * sum(abs(w[g]) * steps[g] for g in range(k))))
        ref = golden["level%d" % k]
        err = float(np.max(np.abs(out - ref)))
        agree = int((out.argmax(1) == ref.argmax(1)).sum())
        if agree < len(out) // 2 or err > 0.5 * float(np.ptp(ref)):
            raise UserError("%s level %d is far from float32 on the golden images (max |diff| %.3g, top-1 agrees "
                            "%d/%d); the quantized engine is wrong, not shipping it" % (what, k, err, agree, len(out)))
        arrays[keys.format(k=k)] = out.astype(np.float32)
        report.append({"level": k, "max_abs_diff_vs_fp32": round(err, 6), "top1_agrees_vs_fp32": agree})
        log("  %-9s level %d: max |diff| vs float32 %.3g, top-1 agrees %d/%d, tolerance %.3g" % (
            what, k, err, agree, len(out), atol[-1]))
    return {"arrays": arrays, "keys": keys, "atol": atol, "tolerance_steps": INT8_TOLERANCE_STEPS,
            "output_steps": steps, "vs_fp32": report,
            "reason": "the logits of this host's int8 kernels; a board may round an intermediate differently, by "
                      "up to %d steps of each group's output grid, combined with the level's weights"
                      % INT8_TOLERANCE_STEPS}


def onnx_int8(tmp, group_models, calib, calib_rec, level_scale, C, in_shape, weights, heads, combiner, golden,
              data_dir, norm, G, log):
    """model_int8.onnx (compile/quantize_onnx.py), its golden logits and its test accuracy through onnxruntime:
    (engine record, golden record). The peer of the TFLite int8 signatures, from the same calibration images."""
    from compile import emit_onnx
    from compile.quantize_onnx import level_outputs, output_step, quantize_group_models
    import onnx
    t = time.time()
    q_groups = quantize_group_models(group_models, calib.numpy())
    model = emit_onnx.compose_levels(q_groups, level_scale, C, in_shape, weights, heads)
    path = os.path.join(tmp, "model_int8.onnx")
    onnx.save(model, path)
    steps = [output_step(q) for q in q_groups]
    if any(s is None for s in steps):
        raise UserError("onnxruntime's quantizer left a group's output unquantized; the int8 ONNX graph is not the "
                        "scheme this bundle states, not shipping it")
    outs = level_outputs(path, golden["input"], range(1, G + 1), threads=1)
    record = _int8_record(outs, steps, golden, combiner, "onnx_int8_level{k}", "onnx int8", log)
    from compile.data import load_dataset
    ds = load_dataset(data_dir, "auto", norm["size"], None if norm["channels"] == 3 else norm["channels"])
    x = Normalizer(norm["mean"], norm["std"])(ds.test_x).numpy()
    y = ds.test_y.numpy()
    test = level_outputs(path, x, range(1, G + 1), threads=max(1, os.cpu_count() or 1))
    accs = [round(float((test[k].argmax(1) == y).mean()), 6) for k in range(1, G + 1)]
    log("  onnx int8 model_int8.onnx: QDQ, test accuracy through onnxruntime (%d images): %s (%.1fs)" % (
        len(y), " / ".join("%.2f%%" % (100 * a) for a in accs), time.time() - t))
    engine = {"file": "model_int8.onnx", "test_accuracy": accs,
              "calibration": dict(calib_rec, scheme="onnxruntime quantize_static, QDQ, MinMax, per-channel "
                                                    "symmetric int8 weights, int8 activations, each group alone")}
    return engine, record


def int8_accuracy(path, data_dir, signatures, combiner, G, norm, log):
    """Test accuracy of every int8 level through this host's int8 engine, on the whole test split of the
    data the model was trained on: what the profiler and the manager rank int8 points by."""
    from compile.data import load_dataset
    ds = load_dataset(data_dir, "auto", norm["size"], None if norm["channels"] == 3 else norm["channels"])
    x = Normalizer(norm["mean"], norm["std"])(ds.test_x).numpy()
    batch = max(i["batch"] for i in signatures.values())
    contrib = _int8_group_outputs(path, signatures, G, batch, x, threads=max(1, os.cpu_count() or 1))
    y = ds.test_y.numpy()
    accs = [float((combine_levels(contrib, k, combiner).argmax(1) == y).mean()) for k in range(1, G + 1)]
    log("  int8      test accuracy through the int8 engine (%d images): %s" % (
        len(y), " / ".join("%.2f%%" % (100 * a) for a in accs)))
    return accs


def _agree(what, level, got, want):
    err = float(np.max(np.abs(got - want)))
    if not np.allclose(got, want, atol=ATOL, rtol=ATOL):
        raise UserError("%s output of level %d differs from PyTorch by %.3g (tolerance %g); the engine is "
                        "wrong, not shipping it" % (what, level, err, ATOL))


def _model_costs(model, meta, weights):
    """The manifest's combination fields: level_weights (G lists, list k-1 = level k's k weights) is what
    a reader applies; level_scale (1/k) stays for readers of uniform bundles (runtime/bundle.level_weights
    checks both); `uniform` says whether they agree."""
    out = {"level_weights": model.level_weights, "level_scale": [1.0 / k for k in range(1, model.num_groups + 1)],
           "uniform_weights": weights is None, "group_widths": model.widths}
    if model.has_heads():
        G, C = model.num_groups, int(meta["num_classes"])
        out["level_heads"] = {
            "classes": C, "group_outputs": [(G - g) * C for g in range(G)],
            "layout": "group g outputs its contributions to levels g..G side by side; level k = the sum over "
                      "g <= k of columns (k-g)*classes..(k-g+1)*classes-1 of group g (level_weights unused)",
            "fits": meta["level_heads"]["fits"]}
    return out


def _levels(meta, model, size, chans, classes):
    """The checkpoint's levels with params, MACs and the MAC-implied dynamic range from the spec's table."""
    from compile.arch import level_costs
    costs = {r["level"]: r for r in level_costs(model.spec, model.widths, size, chans, classes)}
    return [dict(lv, **{k: costs[lv["level"]][k] for k in ("params", "macs", "macs_ratio")}) for lv in meta["levels"]]


def build_bundle(checkpoint, target_name, out_dir=None, data_dir=None, batch_sizes=None, log=print, precision=None):
    t_start = time.time()
    target = get_target(target_name)
    ckpt_path = resolve(checkpoint)
    model, meta = load_checkpoint(ckpt_path)
    paths = deploy_paths(model)
    G, C = int(meta["groups"]), int(meta["num_classes"])
    size, chans = int(meta["input"]["size"]), int(meta["input"]["channels"])
    levels = [lv["level"] for lv in meta["levels"]]
    if levels != list(range(1, G + 1)):
        raise UserError("%s records levels %s; a bundle needs every level 1..%d (a static baseline checkpoint "
                        "has only its own width)" % (ckpt_path, levels, G))
    batch_sizes = check_batch_sizes(list(batch_sizes or target["batch_sizes"]), "batch sizes")
    out_dir, tmp = _prepare_out(out_dir or os.path.join("artifacts", target["name"]))
    try:
        manifest = _emit(tmp, target, model, meta, paths, G, C, size, chans, batch_sizes, ckpt_path, data_dir, log,
                         precision or target["tflite_precision"])
        manifest["build_seconds"] = round(time.time() - t_start, 2)
        atomic_write_bytes(os.path.join(tmp, "manifest.json"), (json.dumps(manifest, indent=2) + "\n").encode(),
                           umask_mode())
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir, manifest


def _emit(tmp, target, model, meta, paths, G, C, size, chans, batch_sizes, ckpt_path, data_dir, log, precision):
    from compile import emit_onnx, emit_tflite
    import onnx
    in_shape = (chans, size, size)
    level_scale = [1.0 / k for k in range(1, G + 1)]
    weights = None if model.is_uniform() else model.level_weights  # None: the uniform graph of old bundles
    combiner, heads = combiner_of(model), model.has_heads()
    opset, ir_version = emit_onnx.target_opset(target)
    norm = meta["input"]
    engines, timings = {}, {}

    images = golden_images(data_dir, GOLDEN_N, size, chans)
    golden = make_golden(model, Normalizer(norm["mean"], norm["std"]), images, range(1, G + 1))
    np.savez(os.path.join(tmp, "golden.npz"), **golden)

    t = time.time()
    group_models = [emit_onnx.export_path(p, in_shape, opset, ir_version) for p in paths]
    all_levels = emit_onnx.compose_levels(group_models, level_scale, C, in_shape, weights, heads)
    if target["engine"] == "tensorrt":  # refuse here what the board's ONNX parser would refuse
        from compile.trt_onnx_check import check_models
        check_models([("model.onnx", all_levels)] + [("groups/group%d.onnx" % g, gm)
                                                     for g, gm in enumerate(group_models, 1)], target["name"])
    onnx.save(all_levels, os.path.join(tmp, "model.onnx"))
    _check_onnx(os.path.join(tmp, "model.onnx"), golden, range(1, G + 1))
    engines["onnx"] = {"file": "model.onnx", "opset": opset, "ir_version": all_levels.ir_version, "level_input": "level",
                       "level_dtype": "int32", "input": "input", "output": "logits"}
    timings["onnx_seconds"] = round(time.time() - t, 2)
    log("  onnx      model.onnx: all %d levels, If per group (%.1fs)" % (G, timings["onnx_seconds"]))

    if "group-onnx" in target["emit"]:
        os.makedirs(os.path.join(tmp, "groups"))
        for g, gm in enumerate(group_models, 1):
            onnx.save(gm, os.path.join(tmp, "groups", "group%d.onnx" % g))
        engines["tensorrt"] = {
            "onnx": "model.onnx", "group_onnx": ["groups/group%d.onnx" % g for g in range(1, G + 1)],
            "precision": target["precision"], "batch_sizes": batch_sizes, "plan": "model.plan",
            "record": "engine.json", "built_on_device": True,
            "build_command": "python3 -m runtime trt-build BUNDLE_DIR [--mode if|per-group]"}

    golden_int8, acc_int8, golden_onnx8 = None, None, None
    if target["engine"] == "tflite":
        t = time.time()
        precs = precisions_of(precision)
        calib, calib_rec = (None, None)
        if "int8" in precs:
            calib_u8, calib_rec = calibration_images(data_dir, size, chans)
            calib = Normalizer(norm["mean"], norm["std"])(calib_u8)
        sigs, _ = emit_tflite.emit_grouped(paths, in_shape, batch_sizes, os.path.join(tmp, "model.tflite"), precs,
                                           calib)
        ops = emit_tflite.read_operators(os.path.join(tmp, "model.tflite"))
        need = emit_tflite.check_runtime(ops, target)
        if "fp32" in precs:
            _check_tflite(os.path.join(tmp, "model.tflite"), golden, range(1, G + 1), sigs, combiner)
        if "int8" in precs:
            golden_int8 = int8_golden(os.path.join(tmp, "model.tflite"), golden, G, sigs, combiner, log)
            golden.update(golden_int8.pop("arrays"))
            np.savez(os.path.join(tmp, "golden.npz"), **golden)
            acc_int8 = int8_accuracy(os.path.join(tmp, "model.tflite"), data_dir, sigs, combiner, G,
                                     dict(norm, size=size, channels=chans), log)
            eng8, golden_onnx8 = onnx_int8(tmp, group_models, calib, calib_rec, level_scale, C, in_shape, weights,
                                           heads, combiner, golden, data_dir, dict(norm, size=size, channels=chans),
                                           G, log)
            engines["onnx"].update(precisions=["fp32", "int8"], int8=eng8)
            golden.update(golden_onnx8.pop("arrays"))
            np.savez(os.path.join(tmp, "golden.npz"), **golden)
        timings["tflite_seconds"] = round(time.time() - t, 2)
        engines["tflite"] = {
            "file": "model.tflite", "form": "signature-per-group", "batch_sizes": batch_sizes,
            "precisions": precs, "signatures": sigs, "operators": [{"name": n, "version": v} for n, v in ops],
            "min_runtime": {"tflite": target.get("tflite_min_runtime", need), "operators_need": need,
                            "reason": "signature runners (get_signature_runner) exist from tflite-runtime 2.7; "
                                      "operators alone need %s" % need}}
        if calib_rec:
            engines["tflite"]["calibration"] = dict(calib_rec, scheme="PT2E static, per-channel symmetric int8 "
                                                                   "weights, int8 activations, each group alone")
        log("  tflite    model.tflite: %d signatures (%d groups x batch %s x %s), ops %s (%.1fs)" % (
            len(sigs), G, "/".join(map(str, batch_sizes)), "/".join(precs), ", ".join("%s v%d" % o for o in ops),
            timings["tflite_seconds"]))

    files = {}
    for root, _, names in os.walk(tmp):
        for n in sorted(names):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, tmp).replace(os.sep, "/")
            files[rel] = {"size": os.path.getsize(p), "sha256": sha256_file(p)}
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION_HEADS if heads else SCHEMA_VERSION,
        "target": target,
        "model": dict(_model_costs(model, meta, weights), **{
                  "arch": meta["arch"], "scheme": meta["scheme"], "groups": G, "num_classes": C,
                  "class_names": meta.get("class_names"), "combine": meta.get("combine", "mean"),
                  "checkpoint": {"file": os.path.basename(ckpt_path), "sha256": meta["tensors"]["sha256"],
                                 "data_fingerprint": meta.get("data", {}).get("fingerprint")}}),
        "levels": [dict(lv, **({"test_accuracy_int8": round(acc_int8[lv["level"] - 1], 6)} if acc_int8 else {}))
                   for lv in _levels(meta, model, size, chans, C)],
        "input": {"name": "input", "shape": [None, chans, size, size], "dtype": "float32", "layout": "NCHW",
                  "image": {"dtype": "uint8", "layout": "NHWC", "size": size, "color": norm.get("color", "RGB")},
                  "normalisation": {"scale": norm.get("scale", 1 / 255.0), "mean": norm["mean"], "std": norm["std"],
                                    "formula": "(uint8 * scale - mean) / std per channel"}},
        "output": {"name": "logits", "shape": [None, C], "dtype": "float32"},
        "engines": engines,
        "golden": dict({"file": "golden.npz", "count": len(golden["input"]), "atol": ATOL, "rtol": ATOL,
                        "atol_fp16": 0.05}, **({"int8": golden_int8, "onnx_int8": golden_onnx8} if golden_int8 else {})),
        "files": files,
        "tools": _versions(),
        "timings": timings,
        "created": utc_now(),
    }
