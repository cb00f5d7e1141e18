"""Accuracy ladder of the three schemes: grouped-incremental (the default), dense-incremental, static widths.

From the checkpoints' records by default; re-measured through TFLite engines on the test split with --data.
A checkpoint that does not exist yet is reported as missing, never an error.
"""
import os

import numpy as np

from compile.errors import UserError


def _record(path):
    from compile.checkpoint import read_meta, resolve, sidecar_path
    path = resolve(path)
    side = sidecar_path(path)
    if not os.path.isfile(side):
        return None, "missing: %s does not exist" % side
    try:
        return read_meta(path), None
    except UserError as exc:
        return None, "unreadable: %s" % exc


def _entry(meta, path, levels=None):
    lv = [{"level": int(v["level"]), "accuracy": float(v["test_accuracy"]), "macs": int(v["macs"]),
           "params": int(v["params"])} for v in meta["levels"] if levels is None or v["level"] in levels]
    return {"status": "ok", "source": "record", "file": path, "levels": lv,
            "data_fingerprint": meta.get("data", {}).get("fingerprint"),
            "test_images": meta.get("data", {}).get("test_images")}


def records(grouped_ckpt, grouped_meta, dense_ckpt, static_dir, G):
    out = {"grouped": _entry(grouped_meta, grouped_ckpt)}
    meta, why = _record(dense_ckpt)
    out["dense"] = _entry(meta, dense_ckpt) if meta else {"status": why, "levels": []}
    widths, missing = [], []
    for K in range(1, G + 1):
        path = os.path.join(static_dir, "width-%d" % K, "model.safetensors")
        meta, why = _record(path)
        if meta is None:
            missing.append({"width": K, "status": why})
            continue
        e = _entry(meta, path)
        for v in [v for v in e["levels"] if v["level"] == K] or e["levels"][-1:]:
            widths.append(dict(v, level=K, file=path, data_fingerprint=e["data_fingerprint"]))
    out["static"] = {"status": "ok" if widths and not missing else ("partial" if widths else "missing"),
                     "source": "record", "levels": widths, "missing": missing}
    fps = [e.get("data_fingerprint") for e in [out["grouped"], out["dense"]] + widths]
    out["same_data"] = len(set(f for f in fps if f)) <= 1
    return out


def _accuracy(logits, y):
    return float((logits.argmax(1) == y).mean())


def remeasure(acc, data_dir, engine_model, dense, batch, n, work, log=print):
    """Replace the recorded accuracies with ones measured through TFLite on the first n test images."""
    from bench.engines import Signature, open_interpreter
    from runtime.backends.base import run_batched
    from bench.refs import static_file
    from compile.data import Normalizer, load_dataset
    from compile.checkpoint import read_meta

    size = engine_model.input_shape[1]
    ds = load_dataset(data_dir, "auto", size)
    n = min(n or len(ds.test_x), len(ds.test_x))
    u8, y = ds.test_x[:n], ds.test_y[:n].numpy()
    log("  accuracy: %d test images of %s through the engines (batch %d)" % (n, data_dir, batch))
    images = np.ascontiguousarray(u8.numpy().transpose(0, 2, 3, 1))
    x = engine_model.preprocess(images)
    acc["grouped"]["levels"] = [dict(v, accuracy=_accuracy(engine_model.infer(x, v["level"]), y))
                                for v in acc["grouped"]["levels"]]
    acc["grouped"].update(source="engine", test_images=n)

    def norm_for(meta):
        return Normalizer(meta["input"]["mean"], meta["input"]["std"])(u8).numpy()

    if dense:
        path, meta = dense
        it = open_interpreter(path, engine_model.backend.threads or 1)
        xd = norm_for(meta)
        acc["dense"]["levels"] = [dict(v, accuracy=_accuracy(
            run_batched(Signature(it, "level%d_b%d" % (v["level"], batch)), xd, batch), y))
            for v in acc["dense"]["levels"]]
        acc["dense"].update(source="engine", test_images=n)
    for v in acc["static"]["levels"]:
        f = static_file(v["file"], [batch], work, log)
        meta = read_meta(v["file"])
        it = open_interpreter(f, engine_model.backend.threads or 1)
        v["accuracy"] = _accuracy(run_batched(Signature(it, "width%d_b%d" % (v["level"], batch)),
                                              norm_for(meta), batch), y)
    if acc["static"]["levels"]:
        acc["static"].update(source="engine", test_images=n)
    acc["same_data"] = True
    return acc
