"""TensorRT on the board (Jetson Nano: TensorRT 8.2, pycuda; other machines: TensorRT 10, cuda-python).

  version.py  which TensorRT is here and which API family it speaks (the one trt_major)
  cuda.py     the one CUDA import and memory shim (pycuda or cuda-python)
  engine_api.py  one execution context per optimisation profile, TensorRT 8 or 10 calls
  backend.py  runs the engine(s) that engine.json names (runtime.load picks it for nano-gpu bundles)
  builder.py  `python -m runtime trt-build BUNDLE`: ONNX -> engine(s) + engine.json, on the device
  selftest.py `python -m runtime trt-selftest BUNDLE`: golden vectors and latency per level

engine.json itself is read and written only through runtime.bundle (its last section).
Nothing here imports tensorrt or a CUDA package until a command or a backend needs it. Python 3.6+.
"""
from runtime.errors import RuntimeUserError

MODES = ("per-group", "if")  # per-group first: the default (docs/tensorrt.md, "The two modes")


class TensorRTError(RuntimeUserError):
    """Expected failure (no or stale engine, missing package, a refused build): one line saying what to do.
    A RuntimeUserError, so runtime.load() falls back to the ONNX engine and every CLI prints one line."""


class ParseError(TensorRTError):
    """TensorRT's ONNX parser refused a file; `lines` holds the parser's own messages."""

    def __init__(self, source, lines):
        TensorRTError.__init__(self, "TensorRT's ONNX parser rejected %s (%d error%s above)"
                               % (source, len(lines), "" if len(lines) == 1 else "s"))
        self.source, self.lines = source, lines


def build_hint(bundle_dir, mode=None):
    """The command that (re)builds a bundle's engine on the board."""
    return "python3 -m runtime trt-build %s%s" % (bundle_dir, " --mode %s" % mode if mode else "")
