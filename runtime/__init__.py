"""On-board runtime for dynn bundles. Python 3.6+, numpy and one engine binding; no torch, no onnx.

    from runtime import load
    with load("artifacts/xu3") as model:
        model.set_level(2)
        logits = model.infer(model.preprocess(images))
"""
from runtime.errors import RuntimeUserError
from runtime.model import Model, load

__all__ = ["load", "Model", "RuntimeUserError"]
__version__ = "0.1.0"
