"""On-board runtime for dynn bundles. Python 3.6+, numpy and one engine binding; no torch, no onnx.

    from runtime import load
    with load("artifacts/xu3") as model:
        model.set_level(2)
        logits = model.infer(model.preprocess(images))

One Model may be shared by threads; bad input raises RuntimeUserError with one line (docs/runtime.md).
"""
from runtime.errors import DynnError, RuntimeUserError
from runtime.model import Model, load

__all__ = ["load", "Model", "DynnError", "RuntimeUserError"]
__version__ = "0.1.0"
