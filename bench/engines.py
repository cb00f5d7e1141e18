"""The things the benchmark runs, each as a plain callable fn(x) -> logits.

  engine       the shipped runtime (runtime.load, TFLite/XNNPACK, one file, every level): Model.infer
  bare         the same interpreter's signature runners called by hand and summed (the runtime's overhead)
  onnxruntime  the same bundle's model.onnx through the runtime's ONNX backend (no spinning threads)
  pytorch      the same BatchNorm-folded group paths in eager PyTorch (compile.fold_bn.DeployLevel)
  single       a separately compiled single-level .tflite (bench/refs.py)
  dense        the dense-incremental baseline's .tflite, one signature per level
"""
import numpy as np


def open_interpreter(path, threads):
    from runtime.backends.tflite_backend import interpreter_class
    cls, _ = interpreter_class()
    return cls(model_path=path, num_threads=int(threads))


class Signature(object):
    """One signature of an open TFLite interpreter, called like a function."""

    def __init__(self, interp, name):
        io = interp.get_signature_list()
        if name not in io:
            raise KeyError("no signature %s (available: %s)" % (name, ", ".join(sorted(io))))
        self.runner = interp.get_signature_runner(name)
        self.inp, self.out = io[name]["inputs"][0], io[name]["outputs"][0]

    def __call__(self, x):
        return self.runner(**{self.inp: x})[self.out]


def combiners(manifest):
    """Per level, what DeployLevel combines groups with: 1/k (uniform mean), the level's weights
    (runtime.bundle.level_weights, the runtime's own reading of the manifest) or {"classes": C} (level heads)."""
    from runtime.bundle import level_heads, level_weights
    if level_heads(manifest):
        return [{"classes": int(manifest["model"]["num_classes"])}] * int(manifest["model"]["groups"])
    return [1.0 / k if w is None else [float(v) for v in w] for k, w in enumerate(level_weights(manifest), 1)]


def bare_level(interp, level, batch, manifest):
    """The engine's own interpreter driven by hand: group runners 1..level combined as the runtime does
    (runtime.backends.base.Combiner), no runtime around them. Model.infer's time over this is the runtime's
    overhead (validation, batching, dispatch)."""
    from runtime.backends.base import Combiner
    sigs = [Signature(interp, "group%d_b%d" % (g, batch)) for g in range(1, level + 1)]
    combiner = Combiner.from_manifest(manifest)

    def run(x):
        return combiner([(g, s(x)) for g, s in enumerate(sigs, 1)], level)
    return run


def engine_level(model, level):
    return lambda x: model.infer(x, level)


def torch_levels(paths, combiners, threads):
    """{level: fn} running DeployLevel(paths[:k]) eagerly under inference_mode with `threads` torch threads."""
    import torch
    from compile.fold_bn import DeployLevel
    mods = {k: DeployLevel(paths[:k], combiners[k - 1]).eval() for k in range(1, len(paths) + 1)}

    def make(mod):
        def run(x):
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            with torch.inference_mode():
                return mod(torch.from_numpy(x)).numpy()
        return run
    return {k: make(m) for k, m in mods.items()}
