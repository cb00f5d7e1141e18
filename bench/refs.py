"""Reference models the shipped engine is compared with, converted once and cached in the work folder.

  single-level  level k of the default checkpoint as its own network (compile.fold_bn.DeployLevel over paths
                1..k), one .tflite per level: what a project without width switching would ship.
  dense         the dense-incremental baseline (Tann et al. 2016) as one .tflite, one signature per level:
                its groups read each other's channels, so it cannot be split into per-group signatures.
  static        each separately trained static width (only for re-measuring accuracy with --data).

Every file is checked against PyTorch once after conversion; a cache entry is keyed by the checkpoint's
sha256 and reused for any run that needs a subset of its batch sizes.
"""
import os

import numpy as np
import torch
from torch import nn

from compile.errors import UserError
from runtime.cli import quiet_fds  # the project's one fd-silencer (bench.run takes it from here too)

ATOL = 1e-4


def _show(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _batch_tag(batch_sizes):
    return "b" + "-".join(str(b) for b in sorted(batch_sizes))


def _cached(folder, stem, batch_sizes):
    """An existing file in folder for `stem` whose batch sizes include all of batch_sizes."""
    if not os.path.isdir(folder):
        return None
    want = set(batch_sizes)
    for name in sorted(os.listdir(folder)):
        if name.startswith(stem + "_b") and name.endswith(".tflite"):
            have = set(int(b) for b in name[len(stem) + 2:-len(".tflite")].split("-") if b.isdigit())
            if want <= have:
                return os.path.join(folder, name)
    return None


def _convert(named, in_shape, path):
    from compile.emit_tflite import convert_modules
    tmp = path + ".part.tflite"
    try:
        with quiet_fds():
            convert_modules(named, lambda b: (b,) + tuple(in_shape), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check(path, sig, module, in_shape, what, batch=1):
    from bench.engines import Signature, open_interpreter
    x = np.random.default_rng(0).standard_normal((batch,) + tuple(in_shape)).astype(np.float32)
    got = Signature(open_interpreter(path, 1), sig)(x)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    if not np.allclose(got, want, atol=ATOL, rtol=ATOL):
        raise UserError("%s (%s) differs from PyTorch by %.3g; delete %s and re-run"
                        % (what, path, float(np.max(np.abs(got - want))), path))


def convert_cached(folder, stem, modules_by_sig, batch_sizes, in_shape, what, log):
    """modules_by_sig: [(signature prefix, module)]; signature names are PREFIX_bB."""
    path = _cached(folder, stem, batch_sizes)
    if path is None:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "%s_%s.tflite" % (stem, _batch_tag(batch_sizes)))
        log("  converting %s -> %s" % (what, _show(path)))
        named = [("%s_b%d" % (prefix, b), mod, b) for prefix, mod in modules_by_sig for b in sorted(batch_sizes)]
        _convert(named, in_shape, path)
    b = min(batch_sizes)  # a file may carry only a large batch (accuracy re-measurement at batch 32)
    for prefix, mod in modules_by_sig:
        _check(path, "%s_b%d" % (prefix, b), mod, in_shape, what, b)
    return path


def single_level_files(paths, combiners, sha, in_shape, batch_sizes, work, log=print):
    """{level: path} of one-level .tflite files; signature `level{k}_b{B}`."""
    from compile.fold_bn import DeployLevel
    folder = os.path.join(work, "refs", sha[:16])
    out = {}
    for k in range(1, len(paths) + 1):
        mod = DeployLevel(paths[:k], combiners[k - 1]).eval()
        out[k] = convert_cached(folder, "level%d" % k, [("level%d" % k, mod)], batch_sizes, in_shape,
                                 "single-level model, level %d" % k, log)
    return out


class _DenseLevel(nn.Module):
    """Level k of a DenseIncrementalNet as a network with one input (for one signature)."""

    def __init__(self, model, level):
        super().__init__()
        self.model, self.level = model, level

    def forward(self, input):  # noqa: A002 - the name becomes the signature's input name
        return self.model(input, self.level)


def dense_file(ckpt_path, batch_sizes, work, log=print):
    """(path, meta) of the dense baseline as one .tflite with signature `level{k}_b{B}` per level,
    or (None, reason) when its checkpoint does not exist."""
    from compile.checkpoint import load_checkpoint, resolve
    path = resolve(ckpt_path)
    if not os.path.isfile(path):
        return None, "missing: %s does not exist (python build.py train --scheme dense)" % path
    model, meta = load_checkpoint(path)
    if meta["scheme"] != "dense":
        raise UserError("%s is a %s checkpoint, not the dense baseline" % (path, meta["scheme"]))
    size, chans = int(meta["input"]["size"]), int(meta["input"]["channels"])
    G = int(meta["groups"])
    mods = [("level%d" % k, _DenseLevel(model, k).eval()) for k in range(1, G + 1)]
    folder = os.path.join(work, "refs", meta["tensors"]["sha256"][:16])
    f = convert_cached(folder, "dense", mods, batch_sizes, (chans, size, size),
                        "dense-incremental baseline, %d levels" % G, log)
    return f, meta


def static_file(ckpt_path, batch_sizes, work, log=print):
    """The static width-K checkpoint as one .tflite, signature `width{K}_b{B}`."""
    from compile.checkpoint import load_checkpoint
    from compile.fold_bn import DeployLevel, deploy_paths
    model, meta = load_checkpoint(ckpt_path)
    K = int(meta["groups"])
    size, chans = int(meta["input"]["size"]), int(meta["input"]["channels"])
    mod = DeployLevel(deploy_paths(model), float(meta["level_scale"][K - 1])).eval()
    folder = os.path.join(work, "refs", meta["tensors"]["sha256"][:16])
    return convert_cached(folder, "width%d" % K, [("width%d" % K, mod)], batch_sizes, (chans, size, size),
                           "static width-%d model" % K, log)
