"""Which TensorRT is installed, and which of the two API families this package drives on it.

The one place that reads trt.__version__. Supported, explicitly by major version:
  8   (>= 8.0; the `If` mode needs >= 8.2)  binding indices, execute_async_v2, EXPLICIT_BATCH flag,
      config.max_workspace_size (boards.md 4.1: NVIDIA/TensorRT tag 8.2.1 samples/python/common.py)
  10  tensor names, execute_async_v3, create_network(0), set_memory_pool_limit
      (NVIDIA/TensorRT release/10.0 samples/python/common_runtime.py; docs.nvidia.com TensorRT 8.x -> 10.x
      Python migration guide: max_workspace_size and the binding API removed)
Refused with one line:
  < 8  no build_serialized_network (added in 8.0, boards.md 4.1)
  9    a limited release whose networks are still implicit-batch unless EXPLICIT_BATCH is passed
       ("Implicit batch is not supported since TensorRT 10.0", TensorRT C++ API deprecated list), so
       neither family's calls are right for it as a whole
  11+  weakly typed networks are gone: BuilderFlag.FP16 and the EXPLICIT_BATCH flag are removed
       (docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x.html)
"""
import re

from runtime.trt import TensorRTError

SUPPORTED = (8, 10)
# IIfConditional is new in TensorRT 8.2.0 EA (boards.md 4.2); before it onnx-tensorrt (release/8.0, importIf)
# turns a runtime `If` into a select over both computed branches. JetPack 4.6 ships 8.0.1, 4.6.1 ships 8.2.1
# (boards.md 3.1).
IF_MIN = (8, 2)
_WHY = {9: "TensorRT 9 still builds implicit-batch networks by default and mixes the 8 and 10 calls",
        11: "TensorRT 11 drops BuilderFlag.FP16 and weakly typed networks"}


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTError("the TensorRT Python package `tensorrt` is not importable (%s): on a Jetson install "
                            "JetPack's python3-libnvinfer (sudo apt-get install python3-libnvinfer) and use the "
                            "system python3 (3.6 on JetPack 4.6); elsewhere pip install 'tensorrt>=10,<11'" % e)
    return tensorrt


def version_tuple(trt):
    """(major, minor) of the installed TensorRT; a version that does not start with two numbers is refused."""
    m = re.match(r"^(\d+)\.(\d+)", str(getattr(trt, "__version__", "")))
    if not m:
        raise TensorRTError("cannot read the TensorRT version %r; this runtime supports TensorRT 8.x and 10.x"
                            % (getattr(trt, "__version__", None),))
    return int(m.group(1)), int(m.group(2))


def api_major(trt):
    """8 or 10: which call family to use. Any other major is refused with one line."""
    major, _ = version_tuple(trt)
    if major not in SUPPORTED:
        why = _WHY.get(major) or (_WHY[11] if major > 11 else "it predates build_serialized_network")
        raise TensorRTError("TensorRT %s is not supported (%s): use TensorRT 8.x (8.2.1 on JetPack 4.6.1+) or "
                            "10.x" % (trt.__version__, why))
    return major


def require_if_support(trt):
    """The `if` mode needs a parser that keeps a runtime `If` as a conditional (8.2+)."""
    if version_tuple(trt) < IF_MIN:
        raise TensorRTError("--mode if needs TensorRT 8.2 or newer, this is %s (its ONNX parser computes both "
                            "branches of every If, so levels would save nothing): use --mode per-group, or "
                            "upgrade to JetPack 4.6.1+" % trt.__version__)
